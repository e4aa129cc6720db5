/* test_kv_watch.c - the KV change history behind KEEL.WATCH: order, completeness, bounds, FROM. */
#include "test_kv_util.h"

#include "base/rand.h"

#include <stdio.h>

#define AT(ms, line, want) KT_EQ_STR(kvt_at(&t, ms, line), want)
#define OK(line, want) KT_EQ_STR(kvt(&t, line), want)

static kvt_t t;
static char text[1 << 16];

/* The changes after revision `after` as "rev:put:key=value" / "rev:del:key", space-separated. */
static const char *changes_after(const keel_kv_t *kv, uint64_t after)
{
    size_t pos, n = 0;
    if (keel_kv_history_seek(kv, after, &pos) != 0)
        return "(compacted)";
    text[0] = '\0';
    for (; pos < keel_kv_history_len(kv) && n < sizeof(text); pos++) {
        keel_kv_change_t c;
        keel_kv_history_at(kv, pos, &c);
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s%llu:%s:%.*s", n ? " " : "",
                              (unsigned long long)c.revision,
                              c.op == KEEL_KV_CHANGE_PUT ? "put" : "del", (int)c.key_len,
                              (const char *)c.key);
        if (c.op == KEEL_KV_CHANGE_PUT && n < sizeof(text))
            n += (size_t)snprintf(text + n, sizeof(text) - n, "=%.*s", (int)c.value_len,
                                  (const char *)c.value);
    }
    return text;
}

static void fresh(const keel_kv_config_t *cfg)
{
    kvt_free(&t);
    kvt_init(&t, cfg);
}

static void every_write_command_records_its_changes_at_its_revision(void)
{
    fresh(NULL);
    OK("SET a 1", "+OK\r\n");                 /* 1 */
    OK("SET a 2 NX", "$-1\r\n");              /* no change, no revision */
    OK("GETSET a 3", "$1\r\n1\r\n");          /* 2 */
    OK("MSET b x c y", "+OK\r\n");            /* 3: two puts */
    OK("INCR n", ":1\r\n");                   /* 4 */
    OK("APPEND b z", ":2\r\n");               /* 5 */
    OK("DEL a c nope", ":2\r\n");             /* 6: two deletes */
    OK("DEL nope", ":0\r\n");                 /* nothing */
    OK("EXPIRE b 100", ":1\r\n");             /* 7: a new deadline is a put */
    OK("PERSIST b", ":1\r\n");                /* 8 */
    OK("KEEL.CAS b 8 w", ":9\r\n");           /* 9 */
    OK("KEEL.LOCK L 100000", ":1\r\n");       /* a lock is not a key */
    OK("KEEL.FENCED L 1 SET f 1", "+OK\r\n"); /* 10 */
    OK("KEEL.FENCED L 2 SET f 2", "-FENCED token 2 is not the holder of the lock\r\n");
    OK("KEEL.TXN 0 2 3 SET t 1 2 INCR t", "*2\r\n+OK\r\n:2\r\n"); /* 11, 12 */
    OK("KEEL.TXN 1 t 1 1 2 DEL t", "*-1\r\n");                    /* aborted: t's version is 12 */
    KT_EQ_U64(keel_kv_revision(&t.kv), 12);
    KT_EQ_STR(changes_after(&t.kv, 0),
              "1:put:a=1 2:put:a=3 3:put:b=x 3:put:c=y 4:put:n=1 5:put:b=xz 6:del:a 6:del:c "
              "7:put:b=xz 8:put:b=xz 9:put:b=w 10:put:f=1 11:put:t=1 12:put:t=2");
    KT_EQ_U64(keel_kv_history_oldest(&t.kv), 1);
}

static void leases_and_sweeps_record_each_deleted_key_in_one_revision(void)
{
    fresh(NULL);
    AT(1000, "KEEL.LEASE GRANT 500", ":1\r\n"); /* no key change */
    AT(1000, "KEEL.SET s/a 1 LEASE 1", "+OK\r\n");
    AT(1000, "KEEL.SET s/b 2 LEASE 1", "+OK\r\n");
    AT(1000, "SET e1 v PX 100", "+OK\r\n");
    AT(1000, "SET e2 v PX 100", "+OK\r\n");
    AT(1000, "KEEL.LEASE KEEPALIVE 1", ":500\r\n"); /* no key change */
    KT_EQ_U64(keel_kv_revision(&t.kv), 4);
    AT(1200, "KEEL.EXPIRE.SWEEP 1200 10", ":2\r\n"); /* 5: both keys */
    AT(2000, "KEEL.LEASE.SWEEP 2000 10", ":1\r\n");  /* 6: both leased keys */
    AT(2000, "KEEL.LEASE GRANT 500", ":2\r\n");
    AT(2000, "KEEL.SET s/c 3 LEASE 2", "+OK\r\n"); /* 7 */
    AT(2000, "KEEL.LEASE REVOKE 2", ":1\r\n");     /* 8 */
    /* the sweep removes in deadline order (ties by key); a lease's keys newest first */
    KT_EQ_STR(changes_after(&t.kv, 4),
              "5:del:e1 5:del:e2 6:del:s/b 6:del:s/a 7:put:s/c=3 8:del:s/c");
}

static void from_a_revision_means_after_all_of_its_changes(void)
{
    fresh(NULL);
    OK("SET a 1", "+OK\r\n");
    OK("MSET a 2 b 2 c 2", "+OK\r\n");
    OK("SET c 3", "+OK\r\n");
    size_t pos;
    KT_EQ_INT(keel_kv_history_seek(&t.kv, 1, &pos), 0);
    KT_EQ_INT(pos, 1); /* all three puts of revision 2 */
    KT_EQ_INT(keel_kv_history_seek(&t.kv, 2, &pos), 0);
    KT_EQ_INT(pos, 4); /* none of them */
    KT_EQ_STR(changes_after(&t.kv, 2), "3:put:c=3");
    KT_EQ_INT(keel_kv_history_seek(&t.kv, 3, &pos), 0);
    KT_EQ_INT(pos, keel_kv_history_len(&t.kv)); /* caught up */
    KT_EQ_INT(keel_kv_history_seek(&t.kv, 99, &pos), 0);
    KT_EQ_INT(pos, keel_kv_history_len(&t.kv)); /* a future revision: wait for it */
}

static void the_history_keeps_the_newest_whole_revisions_within_its_count(void)
{
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.history_changes_max = 5;
    fresh(&cfg);
    for (int i = 1; i <= 4; i++)
        OK("SET k v", "+OK\r\n");  /* 1..4 */
    OK("MSET a 1 b 1", "+OK\r\n"); /* 5: six changes, so revision 1 goes */
    KT_EQ_INT(keel_kv_history_len(&t.kv), 5);
    KT_EQ_U64(keel_kv_history_oldest(&t.kv), 2);
    size_t pos;
    KT_EQ_INT(keel_kv_history_seek(&t.kv, 0, &pos), KEEL_ERANGE); /* revision 1 is gone */
    KT_EQ_STR(changes_after(&t.kv, 1), "2:put:k=v 3:put:k=v 4:put:k=v 5:put:a=1 5:put:b=1");
    OK("MSET a 2 b 2 c 2", "+OK\r\n"); /* 6: needs 3 slots: 2, 3 and 4 go, 5 stays */
    KT_EQ_STR(changes_after(&t.kv, 4), "5:put:a=1 5:put:b=1 6:put:a=2 6:put:b=2 6:put:c=2");
    OK("SET x 1", "+OK\r\n"); /* 7: the oldest revision (5) goes whole, not just one change */
    KT_EQ_U64(keel_kv_history_oldest(&t.kv), 6);
    KT_EQ_STR(changes_after(&t.kv, 5), "6:put:a=2 6:put:b=2 6:put:c=2 7:put:x=1");
    /* A revision bigger than the whole history cannot be held: it is dropped whole and
     * the oldest revision moves past it (a reader behind it must resynchronize). */
    OK("MSET a 3 b 3 c 3 d 3 e 3 f 3", "+OK\r\n"); /* 8 */
    KT_EQ_U64(keel_kv_history_oldest(&t.kv), 9);
    KT_EQ_INT(keel_kv_history_len(&t.kv), 0);
    KT_EQ_INT(keel_kv_history_seek(&t.kv, 7, &pos), KEEL_ERANGE);
    KT_EQ_STR(changes_after(&t.kv, 8), "");
    OK("DEL a", ":1\r\n"); /* 9: recorded again */
    KT_EQ_STR(changes_after(&t.kv, 8), "9:del:a");
}

static void the_history_stays_within_its_byte_limit(void)
{
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.history_bytes_max = 4096;
    fresh(&cfg);
    static char line[700];
    for (int i = 0; i < 100; i++) {
        snprintf(line, sizeof(line), "SET key%d %0500d", i, i);
        OK(line, "+OK\r\n");
        KT_CHECK(keel_kv_history_bytes(&t.kv) <= 4096);
    }
    /* 500 value + 4 or 5 key bytes + a header of a few dozen: 7 changes fit in 4 KiB */
    size_t n = keel_kv_history_len(&t.kv);
    KT_CHECK(n >= 6 && n <= 8);
    KT_EQ_U64(keel_kv_history_oldest(&t.kv), 100 - n + 1);
    /* a change bigger than the whole limit drops its revision */
    cfg.history_bytes_max = 1024;
    fresh(&cfg);
    OK("SET small v", "+OK\r\n");
    static char big[1300];
    snprintf(big, sizeof(big), "SET big %01100d", 7);
    OK(big, "+OK\r\n");
    KT_EQ_U64(keel_kv_history_oldest(&t.kv), 3);
    KT_EQ_INT(keel_kv_history_len(&t.kv), 0);
}

/*
 * The history's bytes live in a circular arena that wraps and grows (kv_hist.c): with
 * values of random sizes, every change held reads back exactly as written, whatever
 * the arena did in between. Small values first, then values up to VALUE_BYTES_MAX.
 */
enum { ARENA_STEPS = 1500, VALUE_BYTES_MAX = 6000 };

static void write_and_read_back(keel_rand_t *r, size_t history_bytes_max)
{
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.history_changes_max = 200;
    cfg.history_bytes_max = history_bytes_max;
    fresh(&cfg);
    static char line[VALUE_BYTES_MAX + 64];
    static size_t vlen[ARENA_STEPS + 1], klen[ARENA_STEPS + 1];
    for (int rev = 1; rev <= ARENA_STEPS; rev++) {
        size_t cap = rev < ARENA_STEPS / 5 ? 200 : VALUE_BYTES_MAX;
        vlen[rev] = 1 + keel_rand_below(r, cap);
        int n = snprintf(line, sizeof(line), "SET k%0*d ", 1 + (int)keel_rand_below(r, 30), rev);
        klen[rev] = (size_t)n - 5;
        for (size_t i = 0; i < vlen[rev]; i++)
            line[(size_t)n + i] = (char)('a' + (rev + (int)i) % 26);
        line[(size_t)n + vlen[rev]] = '\0';
        KT_EQ_STR(kvt(&t, line), "+OK\r\n");
        size_t len = keel_kv_history_len(&t.kv);
        KT_CHECK(len >= 1 && keel_kv_history_oldest(&t.kv) == (uint64_t)rev - len + 1);
        for (size_t pos = 0; pos < len; pos++) {
            keel_kv_change_t c;
            keel_kv_history_at(&t.kv, pos, &c);
            int at = rev - (int)len + 1 + (int)pos;
            KT_EQ_U64(c.revision, (uint64_t)at);
            KT_CHECK(c.op == KEEL_KV_CHANGE_PUT && c.key_len == klen[at] &&
                     c.value_len == vlen[at]);
            KT_CHECK(c.key[0] == 'k' && atoi((const char *)c.key + 1) == at);
            for (size_t i = 0; i < c.value_len; i++)
                if (c.value[i] != (uint8_t)('a' + (at + (int)i) % 26))
                    KT_FAIL("step %d: change %d value byte %zu differs", rev, at, i);
        }
    }
}

static void changes_of_mixed_sizes_read_back_exactly_as_the_arena_wraps_and_grows(void)
{
    uint64_t seed = 0x6172656eull;
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    /*
     * Byte limits around the arena's first size (64 KiB) make it wrap with little room
     * to spare, or grow, also while wrapped; the last one makes it grow twice more.
     */
    for (size_t limit = 54000; limit <= 74000; limit += 2500)
        write_and_read_back(&r, limit);
    write_and_read_back(&r, 250000);
    KT_CHECK(t.kv.hist.arena_cap > 64 * 1024);
}

static void a_loaded_snapshot_starts_the_history_after_its_revision(void)
{
    fresh(NULL);
    OK("SET a 1", "+OK\r\n");
    OK("SET b 1", "+OK\r\n");
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    kvt_t *u = malloc(sizeof(*u));
    KT_CHECK(u != NULL);
    kvt_init(u, NULL);
    KT_EQ_INT(keel_kv_snapshot_decode(&u->kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL),
              0);
    u->index = t.index;
    KT_EQ_U64(keel_kv_history_oldest(&u->kv), 3);
    KT_EQ_INT(keel_kv_history_len(&u->kv), 0);
    size_t pos;
    KT_EQ_INT(keel_kv_history_seek(&u->kv, 1, &pos), KEEL_ERANGE);
    KT_EQ_INT(keel_kv_history_seek(&u->kv, 2, &pos), 0);
    KT_EQ_STR(kvt(u, "DEL a"), ":1\r\n"); /* the log after the snapshot is replayed */
    KT_EQ_STR(changes_after(&u->kv, 2), "3:del:a");
    kvt_free(u);
    free(u);
    keel_buf_free(&snap);
}

/*
 * Random writes over a few keys, with a small history; after every command:
 * revisions never go down, every revision from the oldest retained to the
 * current one has at least one change (each command that moves the revision
 * changed a key), and replaying the retained changes after a base revision
 * onto the state as of that revision gives the current state exactly.
 */
enum { RK = 6 };

typedef struct model {
    int live[RK];
    char val[RK][64];
} model_t;

static void model_of(const keel_kv_t *kv, model_t *m)
{
    memset(m, 0, sizeof(*m));
    for (int k = 0; k < RK; k++) {
        char key[8];
        int kl = snprintf(key, sizeof(key), "k%d", k);
        keel_kv_value_t v;
        m->live[k] = keel_kv_get(kv, key, (size_t)kl, &v) == 0;
        if (m->live[k])
            snprintf(m->val[k], sizeof(m->val[k]), "%.*s", (int)v.len, (const char *)v.value);
    }
}

static void random_line(keel_rand_t *r, char *line, size_t cap)
{
    int k = (int)keel_rand_below(r, RK), k2 = (int)keel_rand_below(r, RK);
    unsigned v = (unsigned)keel_rand_below(r, 1000);
    switch (keel_rand_below(r, 9)) {
    case 0:
        snprintf(line, cap, "SET k%d v%u", k, v);
        break;
    case 1:
        snprintf(line, cap, "MSET k%d a%u k%d b%u", k, v, k2, v);
        break;
    case 2:
        snprintf(line, cap, "DEL k%d k%d", k, k2);
        break;
    case 3:
        snprintf(line, cap, "APPEND k%d +%u", k, v % 10);
        break;
    case 4:
        snprintf(line, cap, "SET k%d n%u NX", k, v);
        break;
    case 5:
        snprintf(line, cap, "PEXPIRE k%d 1000000", k);
        break;
    case 6:
        snprintf(line, cap, "KEEL.TXN 0 2 3 SET k%d t%u 2 DEL k%d", k, v, k2);
        break;
    case 7:
        snprintf(line, cap, "INCR k%d", k);
        break;
    default:
        snprintf(line, cap, "GETSET k%d g%u", k, v);
        break;
    }
}

/* Every revision from oldest to the current one has changes, in order. */
static void check_revisions(const keel_kv_t *kv)
{
    uint64_t oldest = keel_kv_history_oldest(kv), prev = oldest - 1;
    size_t n = keel_kv_history_len(kv);
    for (size_t i = 0; i < n; i++) {
        keel_kv_change_t c;
        keel_kv_history_at(kv, i, &c);
        KT_CHECK(c.revision == prev + 1 || (i > 0 && c.revision == prev));
        prev = c.revision;
    }
    KT_CHECK(n == 0 ? oldest == keel_kv_revision(kv) + 1 : prev == keel_kv_revision(kv));
}

static void replaying_the_history_onto_an_old_state_gives_the_current_one(void)
{
    uint64_t seed = 0x77617463ull;
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.history_changes_max = 40;
    fresh(&cfg);
    model_t base, cur, replay;
    memset(&base, 0, sizeof(base));
    uint64_t base_rev = 0; /* `base` is the state as of this revision */
    for (int step = 0; step < 3000; step++) {
        char line[160];
        random_line(&r, line, sizeof(line));
        KT_CHECK(strcmp(kvt(&t, line), "(apply/read failed)") != 0);
        check_revisions(&t.kv);
        if (base_rev + 1 < keel_kv_history_oldest(&t.kv) || keel_rand_below(&r, 50) == 0) {
            model_of(&t.kv, &base); /* a new base: the state now (as a snapshot would be) */
            base_rev = keel_kv_revision(&t.kv);
            continue;
        }
        replay = base;
        size_t pos;
        KT_EQ_INT(keel_kv_history_seek(&t.kv, base_rev, &pos), 0);
        for (; pos < keel_kv_history_len(&t.kv); pos++) {
            keel_kv_change_t c;
            keel_kv_history_at(&t.kv, pos, &c);
            int k = c.key[1] - '0';
            replay.live[k] = c.op == KEEL_KV_CHANGE_PUT;
            memset(replay.val[k], 0, sizeof(replay.val[k]));
            if (c.value)
                snprintf(replay.val[k], sizeof(replay.val[k]), "%.*s", (int)c.value_len,
                         (const char *)c.value);
        }
        model_of(&t.kv, &cur);
        if (memcmp(&replay, &cur, sizeof(cur)) != 0)
            KT_FAIL("step %d (%s): replayed history differs from the state", step, line);
    }
}

int main(void)
{
    kvt_init(&t, NULL);
    KT_RUN(every_write_command_records_its_changes_at_its_revision);
    KT_RUN(leases_and_sweeps_record_each_deleted_key_in_one_revision);
    KT_RUN(from_a_revision_means_after_all_of_its_changes);
    KT_RUN(the_history_keeps_the_newest_whole_revisions_within_its_count);
    KT_RUN(the_history_stays_within_its_byte_limit);
    KT_RUN(changes_of_mixed_sizes_read_back_exactly_as_the_arena_wraps_and_grows);
    KT_RUN(a_loaded_snapshot_starts_the_history_after_its_revision);
    KT_RUN(replaying_the_history_onto_an_old_state_gives_the_current_one);
    kvt_free(&t);
    return kt_done();
}
