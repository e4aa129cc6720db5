/* test_raft_log.c - the Raft core's in-memory log (core/raft/log.c) on its own: the index of
   its CONF entries answers as a walk back over the entries would, through appends,
   truncations, compactions and resets. */
#include "base/rand.h"
#include "core/raft/raft_int.h"
#include "ktest.h"

#include <string.h>

/* The newest CONF entry at or before index, by walking back: what the index replaces. */
static const keel_raft_entry_t *walk_back(const keel__raft_log_t *l, uint64_t index)
{
    for (uint64_t i = index; i > l->offset; i--) {
        const keel_raft_entry_t *e = keel__raft_log_at(l, i);
        if (e != NULL && e->type == KEEL_RAFT_ENTRY_CONF)
            return e;
    }
    return NULL;
}

static void expect_like_a_walk(const keel__raft_log_t *l, keel_rand_t *r)
{
    uint64_t last = keel__raft_log_last(l);
    size_t confs = 0; /* the index holds the log's CONF entries, no more */
    for (uint64_t i = l->offset + 1; i <= last; i++)
        confs += keel__raft_log_at(l, i)->type == KEEL_RAFT_ENTRY_CONF;
    KT_EQ_U64(l->confs_n, confs);
    for (int q = 0; q < 8; q++) {
        uint64_t index = l->offset + keel_rand_below(r, last - l->offset + 3);
        size_t k;
        const keel_raft_entry_t *e = keel__raft_log_conf_at(l, index, &k);
        const keel_raft_entry_t *w = walk_back(l, index > last ? last : index);
        KT_CHECK(e == w);
        for (int back = 0; back < 3 && e != NULL; back++) { /* and each older one */
            uint64_t at = e->index;
            e = keel__raft_log_conf_before(l, &k);
            KT_CHECK(e == walk_back(l, at - 1));
        }
    }
}

static void the_conf_index_answers_as_a_walk_back_through_every_change(void)
{
    for (uint64_t seed = 1; seed <= 20; seed++) {
        KT_SEED(seed);
        keel_rand_t r;
        keel_rand_seed(&r, seed);
        keel__raft_log_t l;
        memset(&l, 0, sizeof(l));
        uint64_t term = 1;
        uint8_t data[16] = {0};
        for (int op = 0; op < 3000; op++) {
            uint64_t last = keel__raft_log_last(&l), what = keel_rand_below(&r, 100);
            if (what < 80) {
                uint32_t type = keel_rand_below(&r, 8) == 0 ? KEEL_RAFT_ENTRY_CONF : 0;
                KT_EQ_INT(keel__raft_log_append(&l, term, type, data, 1 + (op % 16)), 0);
            } else if (what < 90 && last > l.offset) {
                keel__raft_log_truncate(&l, l.offset + 1 + keel_rand_below(&r, last - l.offset));
                term++; /* a new leader's entries follow */
            } else if (what < 99 && last > l.offset) {
                keel__raft_log_compact(&l, l.offset + 1 + keel_rand_below(&r, last - l.offset));
            } else {
                keel__raft_log_reset(&l, last + 5, term); /* an installed snapshot */
            }
            expect_like_a_walk(&l, &r);
        }
        keel__raft_log_free(&l);
    }
}

int main(void)
{
    KT_RUN(the_conf_index_answers_as_a_walk_back_through_every_change);
    return kt_done();
}
