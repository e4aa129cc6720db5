/* test_registry_feed.c - the registry's change history (KEEL.REG FEED) and its limits. */
#include "base/buf.h"
#include "core/registry.h"
#include "ktest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID(s) (const uint8_t *)(s), strlen(s)

static int buf_sink(void *data, const uint8_t *p, size_t n)
{
    return keel_buf_append(data, p, n);
}

static keel_reg_spec_t spec(const char *svc, const char *id, uint64_t ttl_ms)
{
    keel_reg_spec_t sp = {0};
    sp.service = (const uint8_t *)svc, sp.service_len = strlen(svc);
    sp.id = (const uint8_t *)id, sp.id_len = strlen(id);
    sp.address = (const uint8_t *)"10.0.0.1", sp.address_len = 8;
    sp.version = (const uint8_t *)"v1", sp.version_len = 2;
    sp.port = 8080;
    sp.status = -1;
    sp.ttl_ms = ttl_ms;
    return sp;
}

static void reg(keel_reg_t *r, const char *svc, const char *id, uint64_t ttl, uint64_t now,
                uint64_t index)
{
    keel_reg_spec_t sp = spec(svc, id, ttl);
    keel_errmsg_t m;
    KT_EQ_INT(keel_reg_register(r, &sp, now, index, &m), 0);
}

/* The history after `after` as text: "index op service/id status" per change, ';' between. */
static void trace(const keel_reg_t *r, uint64_t after, char *out, size_t cap)
{
    size_t pos, n = 0;
    out[0] = '\0';
    KT_EQ_INT(keel_reg_history_seek(r, after, &pos), 0);
    for (; pos < keel_reg_history_len(r); pos++) {
        const keel_reg_event_t *e = keel_reg_history_at(r, pos);
        n += (size_t)snprintf(out + n, cap - n, "%s%llu %s %.*s/%.*s %s", n ? ";" : "",
                              (unsigned long long)e->index, keel_reg_event_op_name(e->op),
                              (int)e->service.n, (const char *)e->service.p, (int)e->inst->id.n,
                              (const char *)e->inst->id.p, keel_reg_status_name(e->inst->status));
        KT_CHECK(n < cap);
    }
}

static void every_change_that_moves_an_index_is_in_the_history_in_order(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    char t[1024];
    reg(&r, "web", "w1", 1000, 0, 2);
    reg(&r, "web", "w1", 1000, 10, 3); /* the same definition: only the TTL restarts */
    keel_reg_spec_t sp = spec("web", "w1", 1000);
    sp.port = 9090;
    keel_errmsg_t m;
    KT_EQ_INT(keel_reg_register(&r, &sp, 20, 4, &m), 0);
    KT_EQ_INT(keel_reg_heartbeat(&r, ID("w1"), 30), 0); /* no index moves: not a change */
    KT_EQ_INT(keel_reg_report(&r, ID("w1"), KEEL_REG_CRITICAL, ID("down"), 40, 5, NULL), 0);
    reg(&r, "api", "a1", 0, 50, 6);
    KT_EQ_INT(keel_reg_deregister(&r, ID("a1"), 60, 7), 0);
    KT_EQ_INT(keel_reg_sweep(&r, 5000, 10, 8), 1); /* w1 lapsed */
    trace(&r, 0, t, sizeof(t));
    KT_EQ_STR(t, "2 register web/w1 passing;4 update web/w1 passing;5 status web/w1 critical;"
                 "6 register api/a1 passing;7 deregister api/a1 passing;8 expire web/w1 critical");
    trace(&r, 5, t, sizeof(t)); /* FROM 5: the changes after index 5 */
    KT_EQ_STR(t, "6 register api/a1 passing;7 deregister api/a1 passing;8 expire web/w1 critical");
    /* the copies are as the change left them: the update has port 9090, the register 8080 */
    size_t pos;
    KT_EQ_INT(keel_reg_history_seek(&r, 0, &pos), 0);
    KT_EQ_INT(keel_reg_history_at(&r, pos)->inst->port, 8080);
    KT_EQ_INT(keel_reg_history_at(&r, pos + 1)->inst->port, 9090);
    keel_reg_free(&r);
}

static void an_instance_moved_to_another_service_leaves_one_and_joins_the_other(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    char t[512];
    reg(&r, "a", "x", 0, 0, 2);
    reg(&r, "b", "x", 0, 0, 3);
    trace(&r, 0, t, sizeof(t));
    KT_EQ_STR(t, "2 register a/x passing;3 deregister a/x passing;3 register b/x passing");
    keel_reg_free(&r);
}

static void the_history_keeps_the_newest_events_and_drops_whole_indexes(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    size_t n = KEEL_REG_HISTORY_EVENTS_MAX + 10;
    char id[32];
    for (size_t i = 0; i < n; i++) { /* a register and a deregister per index */
        snprintf(id, sizeof(id), "i%zu", i);
        reg(&r, "s", id, 0, 0, 2 + i);
        KT_EQ_INT(keel_reg_deregister(&r, ID(id), 0, 2 + i), 0);
    }
    KT_CHECK(keel_reg_history_len(&r) <= KEEL_REG_HISTORY_EVENTS_MAX);
    KT_EQ_INT(keel_reg_history_len(&r) % 2, 0); /* never half an index */
    uint64_t oldest = keel_reg_history_oldest(&r);
    KT_CHECK(oldest > 2);
    size_t pos;
    KT_EQ_INT(keel_reg_history_seek(&r, oldest - 2, &pos), KEEL_ERANGE); /* FROM too old */
    KT_EQ_INT(keel_reg_history_seek(&r, oldest - 1, &pos), 0);
    KT_EQ_INT(pos, 0);
    KT_EQ_U64(keel_reg_history_at(&r, 0)->index, oldest);
    KT_EQ_INT(keel_reg_history_seek(&r, 1u << 30, &pos), 0); /* the future: nothing yet */
    KT_EQ_INT(pos, keel_reg_history_len(&r));
    keel_reg_free(&r);
}

static void a_loaded_snapshot_starts_its_history_after_its_index_and_keeps_the_limits(void)
{
    keel_reg_t a, b;
    keel_reg_config_t cfg = keel_reg_config_default();
    cfg.services_max = 3;
    cfg.tags_max = 2;
    KT_EQ_INT(keel_reg_init(&a, &cfg), 0);
    reg(&a, "s1", "x", 0, 0, 2);
    reg(&a, "s2", "y", 0, 0, 3);
    keel_buf_t out;
    keel_buf_init(&out, 0);
    KT_EQ_INT(keel_reg_snapshot_write(&a, buf_sink, &out), 0);
    KT_EQ_INT(keel_reg_init(&b, NULL), 0);
    keel_errmsg_t m;
    KT_EQ_INT(keel_reg_snapshot_load(&b, keel_buf_rptr(&out), keel_buf_unread(&out), 1, &m), 0);
    KT_CHECK(keel_reg_config_equal(&b.cfg, &cfg));
    KT_EQ_U64(keel_reg_history_oldest(&b), 4);
    KT_EQ_INT(keel_reg_history_len(&b), 0);
    size_t pos;
    KT_EQ_INT(keel_reg_history_seek(&b, 3, &pos), 0);
    KT_EQ_INT(keel_reg_history_seek(&b, 2, &pos), KEEL_ERANGE);
    keel_buf_free(&out);
    keel_reg_free(&a);
    keel_reg_free(&b);
}

static void lowered_limits_refuse_new_requests_and_keep_what_is_there(void)
{
    keel_reg_t r;
    KT_EQ_INT(keel_reg_init(&r, NULL), 0);
    reg(&r, "s1", "x", 0, 0, 2);
    reg(&r, "s2", "y", 0, 0, 3);
    keel_reg_config_t cfg = r.cfg;
    cfg.services_max = 1;
    keel_errmsg_t m;
    KT_EQ_INT(keel_reg_set_config(&r, &cfg, &m), 0);
    keel_reg_spec_t sp = spec("s3", "z", 0);
    KT_EQ_INT(keel_reg_register(&r, &sp, 0, 4, &m), KEEL_EFULL);
    KT_CHECK(strstr(m.text, "services_max 1") != NULL);
    reg(&r, "s1", "x2", 0, 0, 5); /* an existing service still takes instances */
    /* a snapshot of a registry past its limits still loads (judged by the ceilings) */
    keel_buf_t out;
    keel_buf_init(&out, 0);
    KT_EQ_INT(keel_reg_snapshot_write(&r, buf_sink, &out), 0);
    keel_reg_t b;
    KT_EQ_INT(keel_reg_init(&b, NULL), 0);
    KT_EQ_INT(keel_reg_snapshot_load(&b, keel_buf_rptr(&out), keel_buf_unread(&out), 1, &m), 0);
    KT_EQ_INT(b.svc_n, 2);
    KT_EQ_INT(b.cfg.services_max, 1);
    /* limits out of range are refused whole */
    cfg.tags_max = KEEL_REG_TAGS_CEILING + 1;
    KT_EQ_INT(keel_reg_set_config(&r, &cfg, &m), KEEL_EINVAL);
    KT_EQ_INT(r.cfg.services_max, 1);
    keel_buf_free(&out);
    keel_reg_free(&b);
    keel_reg_free(&r);
}

static void limits_are_found_by_name_with_dashes_or_underscores(void)
{
    KT_EQ_INT(keel_reg_limit_find(ID("services_max")), 0);
    KT_EQ_INT(keel_reg_limit_find(ID("instances-per-service-max")), 1);
    KT_EQ_INT(keel_reg_limit_find(ID("THRESHOLD_MAX")), (int)KEEL_REG_LIMITS_COUNT - 1);
    KT_EQ_INT(keel_reg_limit_find(ID("services")), -1);
    keel_reg_config_t c = keel_reg_config_default();
    for (size_t i = 0; i < KEEL_REG_LIMITS_COUNT; i++) {
        keel_reg_config_t d = c;
        keel_reg_limit_set(&d, i, keel_reg_limit_get(&c, i) + 1);
        KT_CHECK(!keel_reg_config_equal(&c, &d)); /* every row reaches its own field */
        KT_EQ_U64(keel_reg_limit_get(&d, i), keel_reg_limit_get(&c, i) + 1);
    }
}

int main(void)
{
    KT_RUN(every_change_that_moves_an_index_is_in_the_history_in_order);
    KT_RUN(an_instance_moved_to_another_service_leaves_one_and_joins_the_other);
    KT_RUN(the_history_keeps_the_newest_events_and_drops_whole_indexes);
    KT_RUN(a_loaded_snapshot_starts_its_history_after_its_index_and_keeps_the_limits);
    KT_RUN(lowered_limits_refuse_new_requests_and_keep_what_is_there);
    KT_RUN(limits_are_found_by_name_with_dashes_or_underscores);
    return kt_done();
}
