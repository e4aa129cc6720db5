/* test_registry.c - the pure service registry (core/registry): lifetimes, health, limits. */
#include "base/buf.h"
#include "base/rand.h"
#include "core/registry.h"
#include "ktest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A spec from C strings; tags and meta as NULL-terminated lists. */
typedef struct spec_buf {
    keel_reg_spec_t sp;
    const uint8_t *tags[KEEL_REG_TAGS_CEILING];
    size_t tag_lens[KEEL_REG_TAGS_CEILING];
    const uint8_t *meta[64];
    size_t meta_lens[64];
} spec_buf_t;

static keel_reg_spec_t *spec(spec_buf_t *b, const char *svc, const char *id, uint64_t ttl_ms,
                             const char *const *tags, const char *const *meta)
{
    memset(b, 0, sizeof(*b));
    keel_reg_spec_t *sp = &b->sp;
    sp->service = (const uint8_t *)svc, sp->service_len = strlen(svc);
    sp->id = (const uint8_t *)id, sp->id_len = strlen(id);
    sp->address = (const uint8_t *)"10.0.0.1", sp->address_len = 8;
    sp->version = (const uint8_t *)"v1", sp->version_len = 2;
    sp->port = 8080;
    sp->status = -1;
    sp->ttl_ms = ttl_ms;
    for (size_t i = 0; tags && tags[i]; i++, sp->tags_n++) {
        b->tags[i] = (const uint8_t *)tags[i];
        b->tag_lens[i] = strlen(tags[i]);
    }
    for (size_t i = 0; meta && meta[i]; i++, sp->meta_n++) {
        b->meta[i] = (const uint8_t *)meta[i];
        b->meta_lens[i] = strlen(meta[i]);
    }
    sp->tags = b->tags, sp->tag_lens = b->tag_lens;
    sp->meta = b->meta, sp->meta_lens = b->meta_lens;
    return sp;
}

#define ID(s) (const uint8_t *)(s), strlen(s)

static void reg(keel_reg_t *r, const char *svc, const char *id, uint64_t ttl, uint64_t now,
                uint64_t index)
{
    spec_buf_t b;
    keel_errmsg_t m;
    KT_EQ_INT(keel_reg_register(r, spec(&b, svc, id, ttl, NULL, NULL), now, index, &m), 0);
}

static void a_registered_instance_is_found_with_its_definition(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    spec_buf_t b;
    const char *tags[] = {"canary", "v2", NULL};
    const char *meta[] = {"zone", "a", "team", "pay", NULL};
    keel_errmsg_t m;
    KT_EQ_INT(keel_reg_register(&r, spec(&b, "orders", "o1", 2000, tags, meta), 100, 7, &m), 0);
    const keel_reg_instance_t *in = keel_reg_find(&r, ID("o1"), 100);
    KT_CHECK(in != NULL);
    KT_EQ_MEM(in->svc->name.p, "orders", 6);
    KT_EQ_MEM(in->address.p, "10.0.0.1", 8);
    KT_EQ_INT(in->port, 8080);
    KT_EQ_INT(in->tags_n, 2);
    KT_CHECK(keel_reg_has_tag(in, ID("v2")));
    KT_CHECK(!keel_reg_has_tag(in, ID("v3")));
    KT_EQ_INT(in->meta_n, 4);
    KT_EQ_INT(in->status, KEEL_REG_PASSING);
    KT_EQ_U64(in->create_index, 7);
    KT_EQ_U64(in->modify_index, 7);
    KT_EQ_U64(keel_reg_service_index(&r, ID("orders")), 7);
    KT_EQ_U64(r.index, 7);
    KT_EQ_U64(keel_reg_next_deadline_ms(&r), 2100);
    KT_CHECK(keel_reg_find(&r, ID("o2"), 100) == NULL);
    keel_reg_free(&r);
}

static void an_instance_lapses_without_heartbeats_and_the_sweep_removes_it(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    reg(&r, "orders", "o1", 2000, 0, 1);
    reg(&r, "orders", "o2", 5000, 0, 2);
    KT_EQ_INT(keel_reg_heartbeat(&r, ID("o1"), 1500), 0); /* o1 now lapses at 3500 */
    KT_EQ_U64(keel_reg_next_deadline_ms(&r), 3500);
    KT_CHECK(keel_reg_find(&r, ID("o1"), 3499) != NULL);
    KT_CHECK(keel_reg_find(&r, ID("o1"), 3500) == NULL); /* lapsed: absent before the sweep */
    KT_EQ_INT(keel_reg_heartbeat(&r, ID("o1"), 3600), KEEL_ENOTFOUND); /* no resurrection */
    KT_EQ_INT(keel_reg_sweep(&r, 3499, 100, 3), 0);
    KT_EQ_U64(r.index, 2);
    KT_EQ_INT(keel_reg_sweep(&r, 3600, 100, 4), 1);
    KT_EQ_U64(r.index, 4);
    KT_EQ_U64(keel_reg_service_index(&r, ID("orders")), 4);
    KT_EQ_INT(r.instances, 1);
    KT_EQ_U64(keel_reg_next_deadline_ms(&r), 5000);
    KT_EQ_INT(keel_reg_sweep(&r, 9000, 100, 5), 1);
    KT_CHECK(keel_reg_service(&r, ID("orders")) == NULL); /* the last instance took it along */
    KT_EQ_U64(keel_reg_service_index(&r, ID("orders")), 5);
    KT_EQ_U64(keel_reg_next_deadline_ms(&r), KEEL_REG_NO_DEADLINE);
    keel_reg_free(&r);
}

static void a_sweep_removes_at_most_max_instances_earliest_first(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    char id[16];
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof(id), "i%02d", i);
        reg(&r, "s", id, 1000 + (uint64_t)((i * 37) % 50) * 10, 0, (uint64_t)i + 1);
    }
    KT_EQ_INT(keel_reg_sweep(&r, 100000, 20, 60), 20);
    KT_EQ_INT(r.instances, 30);
    /* the 20 earliest deadlines went: every remaining one is later than all removed */
    KT_EQ_U64(keel_reg_next_deadline_ms(&r), 1000 + 20 * 10);
    KT_EQ_INT(keel_reg_sweep(&r, 100000, 100, 61), 30);
    KT_EQ_INT(r.svc_n, 0);
    keel_reg_free(&r);
}

static void deregister_removes_and_moves_the_index(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    reg(&r, "a", "a1", 0, 0, 1);
    reg(&r, "a", "a2", 0, 0, 2);
    reg(&r, "b", "b1", 0, 0, 3);
    KT_EQ_INT(keel_reg_deregister(&r, ID("a1"), 10, 4), 0);
    KT_EQ_INT(keel_reg_deregister(&r, ID("a1"), 10, 5), KEEL_ENOTFOUND);
    KT_EQ_U64(keel_reg_service_index(&r, ID("a")), 4);
    KT_EQ_U64(keel_reg_service_index(&r, ID("b")), 3);
    KT_EQ_U64(r.index, 4);
    KT_EQ_U64(keel_reg_next_deadline_ms(&r), KEEL_REG_NO_DEADLINE); /* no TTL: lives on */
    KT_CHECK(keel_reg_find(&r, ID("a2"), UINT64_MAX - 1) != NULL);
    keel_reg_free(&r);
}

static void check_reports_set_the_status_and_keep_the_output(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    reg(&r, "a", "a1", 1000, 0, 1);
    keel_reg_status_t st;
    KT_EQ_INT(keel_reg_report(&r, ID("a1"), KEEL_REG_WARNING, ID("disk 91%"), 500, 2, &st), 0);
    KT_EQ_INT(st, KEEL_REG_WARNING);
    const keel_reg_instance_t *in = keel_reg_find(&r, ID("a1"), 500);
    KT_EQ_MEM(in->output.p, "disk 91%", 8);
    KT_EQ_U64(in->flips, 1);
    KT_EQ_U64(in->modify_index, 2);
    KT_EQ_U64(keel_reg_next_deadline_ms(&r), 1500); /* a report renews the TTL */
    /* the same status again: output kept, no index move */
    KT_EQ_INT(keel_reg_report(&r, ID("a1"), KEEL_REG_WARNING, ID("disk 92%"), 600, 3, &st), 0);
    KT_EQ_U64(r.index, 2);
    KT_EQ_MEM(in->output.p, "disk 92%", 8);
    KT_EQ_INT(keel_reg_report(&r, ID("zz"), KEEL_REG_PASSING, ID(""), 600, 4, &st), KEEL_ENOTFOUND);
    keel_reg_free(&r);
}

static void flap_damping_needs_n_consecutive_reports_the_other_way(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    spec_buf_t b;
    keel_errmsg_t m;
    keel_reg_spec_t *sp = spec(&b, "a", "a1", 0, NULL, NULL);
    sp->failures_before_critical = 3;
    sp->success_before_passing = 2;
    KT_EQ_INT(keel_reg_register(&r, sp, 0, 1, &m), 0);
    keel_reg_status_t st;
    uint64_t ix = 2;
    /* fail, fail, pass (resets), fail, fail: still passing */
    keel_reg_status_t seq[] = {KEEL_REG_CRITICAL, KEEL_REG_CRITICAL, KEEL_REG_PASSING,
                               KEEL_REG_CRITICAL, KEEL_REG_CRITICAL};
    for (size_t i = 0; i < 5; i++) {
        KT_EQ_INT(keel_reg_report(&r, ID("a1"), seq[i], ID(""), 10 * i, ix++, &st), 0);
        KT_EQ_INT(st, KEEL_REG_PASSING);
    }
    KT_EQ_U64(r.index, 1); /* nothing flipped: no index move */
    /* the third consecutive worse report flips it, to the last reported status */
    KT_EQ_INT(keel_reg_report(&r, ID("a1"), KEEL_REG_WARNING, ID(""), 60, ix++, &st), 0);
    KT_EQ_INT(st, KEEL_REG_WARNING);
    const keel_reg_instance_t *in = keel_reg_find(&r, ID("a1"), 60);
    KT_EQ_U64(in->flips, 1);
    KT_EQ_U64(r.index, ix - 1);
    /* back to passing takes two passes */
    KT_EQ_INT(keel_reg_report(&r, ID("a1"), KEEL_REG_PASSING, ID(""), 70, ix++, &st), 0);
    KT_EQ_INT(st, KEEL_REG_WARNING);
    KT_EQ_INT(keel_reg_report(&r, ID("a1"), KEEL_REG_PASSING, ID(""), 80, ix++, &st), 0);
    KT_EQ_INT(st, KEEL_REG_PASSING);
    KT_EQ_U64(in->flips, 2);
    keel_reg_free(&r);
}

static void an_instance_critical_too_long_is_removed(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    spec_buf_t b;
    keel_errmsg_t m;
    keel_reg_spec_t *sp = spec(&b, "a", "a1", 10000, NULL, NULL);
    sp->dca_ms = 3000;
    KT_EQ_INT(keel_reg_register(&r, sp, 0, 1, &m), 0);
    keel_reg_status_t st;
    KT_EQ_INT(keel_reg_report(&r, ID("a1"), KEEL_REG_CRITICAL, ID("down"), 1000, 2, &st), 0);
    KT_EQ_U64(keel_reg_next_deadline_ms(&r), 4000); /* critical since 1000, + 3000 */
    /* still critical, heartbeating: the timeout runs from when it became critical */
    KT_EQ_INT(keel_reg_report(&r, ID("a1"), KEEL_REG_CRITICAL, ID("down"), 3000, 3, &st), 0);
    KT_EQ_U64(keel_reg_next_deadline_ms(&r), 4000);
    KT_CHECK(keel_reg_find(&r, ID("a1"), 3999) != NULL);
    KT_CHECK(keel_reg_find(&r, ID("a1"), 4000) == NULL);
    /* a pass before the timeout would have saved it: check on a second instance */
    sp = spec(&b, "a", "a2", 10000, NULL, NULL);
    sp->dca_ms = 3000;
    KT_EQ_INT(keel_reg_register(&r, sp, 3000, 4, &m), 0);
    KT_EQ_INT(keel_reg_report(&r, ID("a2"), KEEL_REG_CRITICAL, ID(""), 3000, 5, &st), 0);
    KT_EQ_INT(keel_reg_report(&r, ID("a2"), KEEL_REG_PASSING, ID(""), 5000, 6, &st), 0);
    KT_EQ_U64(keel_reg_find(&r, ID("a2"), 5000)->deadline_ms, 15000); /* back to the TTL */
    KT_EQ_INT(keel_reg_sweep(&r, 6500, 10, 7), 1);
    KT_CHECK(keel_reg_find(&r, ID("a1"), 6500) == NULL);
    KT_CHECK(keel_reg_find(&r, ID("a2"), 6500) != NULL);
    keel_reg_free(&r);
}

static void re_registering_keeps_health_and_moves_the_index_only_on_change(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    reg(&r, "a", "a1", 1000, 0, 1);
    keel_reg_status_t st;
    KT_EQ_INT(keel_reg_report(&r, ID("a1"), KEEL_REG_WARNING, ID("x"), 10, 2, &st), 0);
    reg(&r, "a", "a1", 1000, 500, 3); /* same definition: only the TTL restarts */
    KT_EQ_U64(r.index, 2);
    KT_EQ_U64(keel_reg_next_deadline_ms(&r), 1500);
    spec_buf_t b;
    keel_errmsg_t m;
    keel_reg_spec_t *sp = spec(&b, "a", "a1", 1000, NULL, NULL);
    sp->port = 9090;
    KT_EQ_INT(keel_reg_register(&r, sp, 600, 4, &m), 0);
    const keel_reg_instance_t *in = keel_reg_find(&r, ID("a1"), 600);
    KT_EQ_INT(in->port, 9090);
    KT_EQ_INT(in->status, KEEL_REG_WARNING);
    KT_EQ_U64(in->create_index, 1);
    KT_EQ_U64(in->modify_index, 4);
    KT_EQ_U64(r.index, 4);
    /* naming the status it has changes nothing; naming another is a flip */
    sp = spec(&b, "a", "a1", 1000, NULL, NULL);
    sp->port = 9090;
    sp->status = KEEL_REG_WARNING;
    KT_EQ_INT(keel_reg_register(&r, sp, 610, 5, &m), 0);
    KT_EQ_U64(r.index, 4);
    sp->status = KEEL_REG_CRITICAL;
    KT_EQ_INT(keel_reg_register(&r, sp, 620, 5, &m), 0);
    KT_EQ_U64(r.index, 5);
    KT_EQ_INT(in->status, KEEL_REG_CRITICAL);
    KT_EQ_U64(in->flips, 2);
    sp->status = KEEL_REG_WARNING;
    KT_EQ_INT(keel_reg_register(&r, sp, 630, 5, &m), 0);
    /* the same id under another service moves there, health and all */
    reg(&r, "b", "a1", 1000, 700, 6);
    KT_CHECK(keel_reg_service(&r, ID("a")) == NULL);
    in = keel_reg_find(&r, ID("a1"), 700);
    KT_EQ_MEM(in->svc->name.p, "b", 1);
    KT_EQ_INT(in->status, KEEL_REG_WARNING);
    KT_EQ_INT(r.instances, 1);
    /* a lapsed id registers anew */
    reg(&r, "b", "a1", 1000, 5000, 7);
    in = keel_reg_find(&r, ID("a1"), 5000);
    KT_EQ_INT(in->status, KEEL_REG_PASSING);
    KT_EQ_U64(in->create_index, 7);
    keel_reg_free(&r);
}

static void every_limit_refuses_with_a_clear_error_and_changes_nothing(void)
{
    keel_reg_config_t cfg = keel_reg_config_default();
    cfg.services_max = 2;
    cfg.instances_per_service_max = 2;
    cfg.instances_max = 3;
    cfg.tags_max = 2;
    cfg.meta_bytes_max = 8;
    cfg.meta_pairs_max = 2;
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, &cfg), 0);
    keel_errmsg_t m;
    spec_buf_t b;
    reg(&r, "a", "a1", 0, 0, 1);
    reg(&r, "a", "a2", 0, 0, 2);
    KT_EQ_INT(keel_reg_register(&r, spec(&b, "a", "a3", 0, NULL, NULL), 0, 3, &m), KEEL_EFULL);
    KT_CHECK(strstr(m.text, "instances_per_service_max 2") != NULL);
    reg(&r, "b", "b1", 0, 0, 3);
    KT_EQ_INT(keel_reg_register(&r, spec(&b, "c", "c1", 0, NULL, NULL), 0, 4, &m), KEEL_EFULL);
    KT_CHECK(strstr(m.text, "instances_max 3") != NULL);
    KT_EQ_INT(keel_reg_deregister(&r, ID("a2"), 0, 5), 0);
    KT_EQ_INT(keel_reg_register(&r, spec(&b, "c", "c1", 0, NULL, NULL), 0, 6, &m), KEEL_EFULL);
    KT_CHECK(strstr(m.text, "services_max 2") != NULL);
    const char *tags[] = {"x", "y", "z", NULL};
    KT_EQ_INT(keel_reg_register(&r, spec(&b, "b", "b2", 0, tags, NULL), 0, 7, &m), KEEL_EFULL);
    KT_CHECK(strstr(m.text, "tags_max") != NULL);
    const char *big[] = {"key", "value1", NULL};
    KT_EQ_INT(keel_reg_register(&r, spec(&b, "b", "b2", 0, NULL, big), 0, 8, &m), KEEL_ETOOBIG);
    KT_CHECK(strstr(m.text, "meta_bytes_max 8") != NULL);
    const char *many[] = {"a", "", "b", "", "c", "", NULL};
    KT_EQ_INT(keel_reg_register(&r, spec(&b, "b", "b2", 0, NULL, many), 0, 9, &m), KEEL_EFULL);
    const char *dup[] = {"k", "1", "k", "2", NULL};
    KT_EQ_INT(keel_reg_register(&r, spec(&b, "b", "b2", 0, NULL, dup), 0, 10, &m), KEEL_EINVAL);
    keel_reg_spec_t *sp = spec(&b, "b", "b2", 0, NULL, NULL);
    sp->port = 70000;
    KT_EQ_INT(keel_reg_register(&r, sp, 0, 11, &m), KEEL_EINVAL);
    KT_EQ_INT(keel_reg_register(&r, spec(&b, "", "b2", 0, NULL, NULL), 0, 12, &m), KEEL_EINVAL);
    /* nothing of the refused ones changed the state */
    KT_EQ_INT(r.instances, 2);
    KT_EQ_U64(r.index, 5);
    /* moving an instance within the limits is fine: the one leaving makes room */
    reg(&r, "b", "a1", 0, 0, 13);
    KT_EQ_INT(r.svc_n, 1);
    keel_reg_free(&r);
}

/* ---- snapshot section ---------------------------------------------------------------- */

static int buf_sink(void *data, const uint8_t *p, size_t n)
{
    return keel_buf_append(data, p, n);
}

static void fill(keel_reg_t *r)
{
    spec_buf_t b;
    keel_errmsg_t m;
    const char *tags[] = {"t1", "t2", NULL};
    const char *meta[] = {"k", "v", NULL};
    keel_reg_spec_t *sp = spec(&b, "orders", "o1", 2000, tags, meta);
    sp->dca_ms = 9000;
    sp->failures_before_critical = 3;
    KT_EQ_INT(keel_reg_register(r, sp, 0, 1, &m), 0);
    reg(r, "orders", "o2", 0, 0, 2);
    reg(r, "pay", "p1", 4000, 0, 3);
    keel_reg_status_t st;
    KT_EQ_INT(keel_reg_report(r, ID("o1"), KEEL_REG_CRITICAL, ID("boom"), 10, 4, &st), 0);
    KT_EQ_INT(keel_reg_report(r, ID("p1"), KEEL_REG_CRITICAL, ID("x"), 10, 5, &st), 0);
}

static void a_snapshot_section_round_trips_byte_for_byte(void)
{
    keel_reg_t a, b;
    KT_EQ_INT(keel_reg_init(&a, NULL), 0);
    fill(&a);
    keel_buf_t out, again;
    keel_buf_init(&out, 0);
    keel_buf_init(&again, 0);
    KT_EQ_INT(keel_reg_snapshot_write(&a, buf_sink, &out), 0);
    KT_EQ_U64(keel_reg_snapshot_bytes(&a), keel_buf_unread(&out));
    KT_EQ_INT(keel_reg_init(&b, NULL), 0);
    keel_errmsg_t m;
    KT_EQ_INT(keel_reg_snapshot_load(&b, keel_buf_rptr(&out), keel_buf_unread(&out), 1, &m), 0);
    KT_EQ_INT(keel_reg_snapshot_write(&b, buf_sink, &again), 0);
    KT_EQ_INT(keel_buf_unread(&again), keel_buf_unread(&out));
    KT_EQ_MEM(keel_buf_rptr(&again), keel_buf_rptr(&out), keel_buf_unread(&out));
    /* the loaded state behaves the same: damping progress, deadlines, indexes */
    KT_EQ_U64(b.index, a.index);
    KT_EQ_U64(keel_reg_next_deadline_ms(&b), keel_reg_next_deadline_ms(&a));
    const keel_reg_instance_t *in = keel_reg_find(&b, ID("o1"), 10);
    KT_EQ_INT(in->pending_count, 1);
    KT_EQ_INT(in->status, KEEL_REG_PASSING);
    KT_EQ_INT(keel_reg_find(&b, ID("p1"), 10)->status, KEEL_REG_CRITICAL);
    KT_EQ_INT(keel_reg_sweep(&b, 100000, 10, 9), 2); /* o1 and p1 have TTLs; o2 none */
    keel_buf_free(&out);
    keel_buf_free(&again);
    keel_reg_free(&a);
    keel_reg_free(&b);
}

static void a_malformed_section_is_refused_and_leaves_the_registry_empty(void)
{
    keel_reg_t a, b;
    KT_EQ_INT(keel_reg_init(&a, NULL), 0);
    fill(&a);
    keel_buf_t out;
    keel_buf_init(&out, 0);
    KT_EQ_INT(keel_reg_snapshot_write(&a, buf_sink, &out), 0);
    size_t n = keel_buf_unread(&out);
    uint8_t *p = malloc(n + 1);
    keel_errmsg_t m;
    /* every truncation is refused */
    for (size_t cut = 0; cut < n; cut++) {
        memcpy(p, keel_buf_rptr(&out), n);
        KT_EQ_INT(keel_reg_init(&b, NULL), 0);
        if (keel_reg_snapshot_load(&b, p, cut, 1, &m) == 0)
            KT_FAIL("a section cut at %zu of %zu bytes loaded", cut, n);
        KT_EQ_INT(b.instances, 0);
        KT_EQ_INT(b.svc_n, 0);
        keel_reg_free(&b);
    }
    /* a trailing byte, a bad status, a count that does not match */
    memcpy(p, keel_buf_rptr(&out), n);
    p[n] = 0;
    KT_EQ_INT(keel_reg_init(&b, NULL), 0);
    KT_EQ_INT(keel_reg_snapshot_load(&b, p, n + 1, 1, &m), KEEL_EPROTO);
    keel_reg_free(&b);
    p[4 + 8 * KEEL_REG_LIMITS_COUNT + 8] ^= 1; /* the instance count, after the limits */
    KT_EQ_INT(keel_reg_init(&b, NULL), 0);
    KT_EQ_INT(keel_reg_snapshot_load(&b, p, n, 1, &m), KEEL_EPROTO);
    keel_reg_free(&b);
    free(p);
    keel_buf_free(&out);
    keel_reg_free(&a);
}

/* ---- randomized: the registry against a plain model ------------------------------------- */

#define MODEL_IDS 40

typedef struct model_inst {
    int live;
    int svc;
    uint64_t ttl_ms, ttl_deadline;
    int status;
    uint32_t fbc, sbp; /* damping counts */
    int pend_dir;      /* +1 worse, -1 better */
    uint32_t pend_n;
    uint64_t dca_ms, crit_since;
} model_inst_t;

static int model_alive(const model_inst_t *x, uint64_t now)
{
    if (!x->live || (x->ttl_ms && x->ttl_deadline <= now))
        return 0;
    return !(x->dca_ms && x->status == KEEL_REG_CRITICAL && x->crit_since + x->dca_ms <= now);
}

/* registry.h's damping rule, restated. */
static void model_report(model_inst_t *x, int st, uint64_t now)
{
    if (x->ttl_ms)
        x->ttl_deadline = now + x->ttl_ms;
    if (st == x->status) {
        x->pend_dir = 0, x->pend_n = 0;
        return;
    }
    int dir = st > x->status ? 1 : -1;
    if (x->pend_dir != dir)
        x->pend_dir = dir, x->pend_n = 0;
    if (++x->pend_n < (dir > 0 ? x->fbc : x->sbp))
        return;
    x->status = st;
    x->crit_since = st == KEEL_REG_CRITICAL ? now : 0;
    x->pend_dir = 0, x->pend_n = 0;
}

/* Every structural invariant, and agreement with the model at now. */
static void check_against(const keel_reg_t *r, const model_inst_t *m, uint64_t now)
{
    size_t total = 0;
    uint64_t first = KEEL_REG_NO_DEADLINE;
    for (size_t i = 0; i < r->svc_n; i++) {
        const keel_reg_service_t *s = r->svc[i];
        KT_CHECK(s->n > 0);
        if (i > 0)
            KT_CHECK(strcmp((const char *)r->svc[i - 1]->name.p, (const char *)s->name.p) < 0);
        for (size_t k = 0; k < s->n; k++) {
            KT_CHECK(s->inst[k]->svc == s);
            KT_CHECK(s->inst[k]->modify_index <= s->modify_index);
            KT_CHECK(s->modify_index <= r->index);
            if (k > 0)
                KT_CHECK(
                    strcmp((const char *)s->inst[k - 1]->id.p, (const char *)s->inst[k]->id.p) < 0);
            if (s->inst[k]->deadline_ms < first)
                first = s->inst[k]->deadline_ms;
        }
        total += s->n;
    }
    KT_EQ_INT(total, r->instances);
    KT_EQ_U64(keel_reg_next_deadline_ms(r), first);
    for (size_t i = 0; i < r->heap_n; i++) {
        KT_EQ_INT(r->heap[i]->heap_pos, i);
        if (i > 0)
            KT_CHECK(r->heap[(i - 1) / 2]->deadline_ms <= r->heap[i]->deadline_ms);
    }
    for (int id = 0; id < MODEL_IDS; id++) {
        char name[16];
        snprintf(name, sizeof(name), "id%02d", id);
        const keel_reg_instance_t *in = keel_reg_find(r, ID(name), now);
        int alive = model_alive(&m[id], now);
        if (alive != (in != NULL))
            KT_FAIL("%s: model says %s at %llu", name, alive ? "alive" : "gone",
                    (unsigned long long)now);
        if (in) {
            KT_EQ_INT(in->status, m[id].status);
            KT_EQ_INT(in->svc->name.p[1] - '0', m[id].svc);
        }
    }
}

static void random_operations_keep_the_registry_consistent_with_a_model(void)
{
    for (uint64_t seed = 1; seed <= 40; seed++) {
        KT_SEED(seed);
        keel_rand_t rng;
        keel_rand_seed(&rng, seed);
        keel_reg_t r;
        KT_EQ_INT(keel_reg_init(&r, NULL), 0);
        model_inst_t m[MODEL_IDS];
        memset(m, 0, sizeof(m));
        uint64_t now = 1000, index = 1;
        for (int step = 0; step < 2000; step++) {
            now += keel_rand_below(&rng, 40);
            index++;
            int id = (int)keel_rand_below(&rng, MODEL_IDS);
            char name[16], svc[8];
            snprintf(name, sizeof(name), "id%02d", id);
            int alive = model_alive(&m[id], now);
            uint64_t op = keel_rand_below(&rng, 10);
            if (!alive)
                m[id].live = 0; /* lapsed: absent whatever is asked */
            if (op < 3) {       /* register (maybe in another service) */
                int sv = (int)keel_rand_below(&rng, 4);
                snprintf(svc, sizeof(svc), "s%d", sv);
                spec_buf_t b;
                keel_errmsg_t em;
                keel_reg_spec_t *sp = spec(&b, svc, name, 0, NULL, NULL);
                sp->ttl_ms = keel_rand_chance(&rng, 0.2) ? 0 : 50 + keel_rand_below(&rng, 400);
                sp->failures_before_critical = (uint32_t)keel_rand_below(&rng, 4);
                sp->success_before_passing = (uint32_t)keel_rand_below(&rng, 4);
                sp->dca_ms = keel_rand_chance(&rng, 0.5) ? 0 : 30 + keel_rand_below(&rng, 200);
                KT_EQ_INT(keel_reg_register(&r, sp, now, index, &em), 0);
                model_inst_t *x = &m[id];
                if (!alive) /* a new instance */
                    *x = (model_inst_t){.status = KEEL_REG_PASSING};
                else if (x->svc != sv) /* moved: health kept, damping progress not */
                    x->pend_dir = 0, x->pend_n = 0;
                x->live = 1, x->svc = sv, x->ttl_ms = sp->ttl_ms, x->dca_ms = sp->dca_ms;
                x->ttl_deadline = now + sp->ttl_ms;
                x->fbc = sp->failures_before_critical ? sp->failures_before_critical : 1;
                x->sbp = sp->success_before_passing ? sp->success_before_passing : 1;
            } else if (op < 5) { /* heartbeat */
                KT_EQ_INT(keel_reg_heartbeat(&r, ID(name), now), alive ? 0 : KEEL_ENOTFOUND);
                if (alive && m[id].ttl_ms)
                    m[id].ttl_deadline = now + m[id].ttl_ms;
            } else if (op < 8) { /* a check result */
                keel_reg_status_t st = (keel_reg_status_t)keel_rand_below(&rng, 3), got;
                KT_EQ_INT(keel_reg_report(&r, ID(name), st, ID("o"), now, index, &got),
                          alive ? 0 : KEEL_ENOTFOUND);
                if (alive) {
                    model_report(&m[id], (int)st, now);
                    KT_EQ_INT(got, m[id].status);
                }
            } else if (op < 9) {
                KT_EQ_INT(keel_reg_deregister(&r, ID(name), now, index),
                          alive ? 0 : KEEL_ENOTFOUND);
                m[id].live = 0;
            } else { /* the leader's sweep, bounded */
                keel_reg_sweep(&r, now, keel_rand_below(&rng, 5), index);
            }
            check_against(&r, m, now);
        }
        keel_buf_t a, b;
        keel_buf_init(&a, 0);
        keel_buf_init(&b, 0);
        KT_EQ_INT(keel_reg_snapshot_write(&r, buf_sink, &a), 0);
        keel_reg_t back;
        keel_errmsg_t msg;
        KT_EQ_INT(keel_reg_init(&back, NULL), 0);
        if (keel_reg_snapshot_load(&back, keel_buf_rptr(&a), keel_buf_unread(&a), 1, &msg) != 0)
            KT_FAIL("the snapshot does not load: %s", msg.text);
        KT_EQ_INT(keel_reg_snapshot_write(&back, buf_sink, &b), 0);
        KT_EQ_INT(keel_buf_unread(&a), keel_buf_unread(&b));
        KT_EQ_MEM(keel_buf_rptr(&a), keel_buf_rptr(&b), keel_buf_unread(&a));
        check_against(&back, m, now);
        keel_buf_free(&a);
        keel_buf_free(&b);
        keel_reg_free(&back);
        keel_reg_free(&r);
    }
}

int main(void)
{
    KT_RUN(a_registered_instance_is_found_with_its_definition);
    KT_RUN(an_instance_lapses_without_heartbeats_and_the_sweep_removes_it);
    KT_RUN(a_sweep_removes_at_most_max_instances_earliest_first);
    KT_RUN(deregister_removes_and_moves_the_index);
    KT_RUN(check_reports_set_the_status_and_keep_the_output);
    KT_RUN(flap_damping_needs_n_consecutive_reports_the_other_way);
    KT_RUN(an_instance_critical_too_long_is_removed);
    KT_RUN(re_registering_keeps_health_and_moves_the_index_only_on_change);
    KT_RUN(every_limit_refuses_with_a_clear_error_and_changes_nothing);
    KT_RUN(a_snapshot_section_round_trips_byte_for_byte);
    KT_RUN(a_malformed_section_is_refused_and_leaves_the_registry_empty);
    KT_RUN(random_operations_keep_the_registry_consistent_with_a_model);
    return kt_done();
}
