/* kv_registry.c - the registry's commands in core/kv's table (KEEL.REG.WRITE / READ / SWEEP). */
#include "core/kv_cmd_int.h"
#include "core/registry.h"

#include "base/num.h"

#include <stdlib.h>

/*
 * Clients type KEEL.REG <subcommand> ...; the server front end (server/registry_cmd.c)
 * sends the writing subcommands as KEEL.REG.WRITE (through the Raft log) and the reading
 * ones as KEEL.REG.READ (ReadIndex, or KEEL.READS stale), because core/kv decides a
 * command's kind by its name. Neither name is a client command of its own. The registry
 * (core/registry) lives in keel_kv_t.reg, created by the first registration; it shares the
 * store's clock (the entry's stamp) and its snapshot (a section of its own, kv_snap.c).
 *
 *   REGISTER service id address port [TTL ms] [TAGS n tag...] [META n key value...]
 *            [WEIGHTS passing warning] [VERSION v] [STATUS passing|warning|critical]
 *            [DEREGISTER_CRITICAL_AFTER ms] [SUCCESS_BEFORE_PASSING n]
 *            [FAILURES_BEFORE_CRITICAL n]                   -> :registry index
 *   DEREGISTER id                                           -> :1, or :0 if unknown
 *   PASS|WARN|FAIL id [output]                              -> status after damping
 *   HEARTBEAT id                                            -> +OK
 *   SERVICES                         -> *2 :index *n (*3 name :live-instances *tags)
 *   INSTANCES service [PASSING] [TAG tag]   -> *2 :service-index *n instance
 *   GET id                                                  -> instance or nil
 *   INDEX [service]                                         -> :index
 *   LIMITS                       -> the limits in force: *24 (name :value) x 12
 * An instance is a flat field/value array (registry_fields below).
 */
#define ERR_REG_USAGE                                                                              \
    "ERR syntax error: KEEL.REG REGISTER service id address port [TTL ms] [TAGS n tag...] "        \
    "[META n key value...] [WEIGHTS passing warning] [VERSION v] [STATUS s] "                      \
    "[DEREGISTER_CRITICAL_AFTER ms] [SUCCESS_BEFORE_PASSING n] [FAILURES_BEFORE_CRITICAL n] | "    \
    "DEREGISTER id | PASS|WARN|FAIL id [output] | HEARTBEAT id | SERVICES | "                      \
    "INSTANCES service [PASSING] [TAG tag] | GET id | INDEX [service] | LIMITS"
#define ERR_REG_NOTFOUND                                                                           \
    "NOTFOUND registry: no such instance (never registered, deregistered or lapsed)"

/* The entry's index: every committed entry is applied or advanced in order. */
static uint64_t entry_index(const keel_kv_t *kv)
{
    return kv->applied_index + 1;
}

static int u64_arg(const call_t *c, size_t i, uint64_t max, uint64_t *out)
{
    int64_t v;
    if (keel_parse_i64(c->argv[i], c->lens[i], &v) != 0 || v < 0 || (uint64_t)v > max)
        return r_err(c->reply, ERR_NOT_INT);
    *out = (uint64_t)v;
    return 0;
}

/* REGISTER's arguments as a spec pointing into argv. 0 or REPLIED. */
static int parse_register(const call_t *c, keel_reg_spec_t *sp)
{
    if (c->argc < 6)
        return r_err(c->reply, ERR_REG_USAGE);
    memset(sp, 0, sizeof(*sp));
    sp->service = c->argv[2], sp->service_len = c->lens[2];
    sp->id = c->argv[3], sp->id_len = c->lens[3];
    sp->address = c->argv[4], sp->address_len = c->lens[4];
    sp->version = (const uint8_t *)"";
    sp->status = -1;
    uint64_t v, w;
    if (u64_arg(c, 5, UINT32_MAX, &v) != 0)
        return REPLIED;
    sp->port = (uint32_t)v;
    for (size_t i = 6; i < c->argc;) {
        size_t left = c->argc - i - 1;
        if (keel__kvc_arg_is(c, i, "TTL") && left >= 1) {
            if (u64_arg(c, i + 1, INT64_MAX, &sp->ttl_ms) != 0)
                return REPLIED;
            i += 2;
        } else if (keel__kvc_arg_is(c, i, "DEREGISTER_CRITICAL_AFTER") && left >= 1) {
            if (u64_arg(c, i + 1, INT64_MAX, &sp->dca_ms) != 0)
                return REPLIED;
            i += 2;
        } else if (keel__kvc_arg_is(c, i, "TAGS") && left >= 1) {
            if (u64_arg(c, i + 1, left - 1, &v) != 0)
                return REPLIED;
            sp->tags = c->argv + i + 2, sp->tag_lens = c->lens + i + 2, sp->tags_n = v;
            i += 2 + v;
        } else if (keel__kvc_arg_is(c, i, "META") && left >= 1) {
            if (u64_arg(c, i + 1, (left - 1) / 2, &v) != 0)
                return REPLIED;
            sp->meta = c->argv + i + 2, sp->meta_lens = c->lens + i + 2, sp->meta_n = 2 * v;
            i += 2 + 2 * v;
        } else if (keel__kvc_arg_is(c, i, "WEIGHTS") && left >= 2) {
            if (u64_arg(c, i + 1, KEEL_REG_WEIGHT_MAX, &v) != 0 ||
                u64_arg(c, i + 2, KEEL_REG_WEIGHT_MAX, &w) != 0)
                return REPLIED;
            sp->weight_passing = (uint32_t)v, sp->weight_warning = (uint32_t)w;
            i += 3;
        } else if (keel__kvc_arg_is(c, i, "VERSION") && left >= 1) {
            sp->version = c->argv[i + 1], sp->version_len = c->lens[i + 1];
            i += 2;
        } else if (keel__kvc_arg_is(c, i, "STATUS") && left >= 1) {
            keel_reg_status_t st;
            if (keel_reg_status_parse(c->argv[i + 1], c->lens[i + 1], &st) != 0)
                return r_err(c->reply, "ERR registry: status is passing, warning or critical");
            sp->status = (int)st;
            i += 2;
        } else if (keel__kvc_arg_is(c, i, "SUCCESS_BEFORE_PASSING") && left >= 1) {
            if (u64_arg(c, i + 1, KEEL_REG_THRESHOLD_CEILING, &v) != 0)
                return REPLIED;
            sp->success_before_passing = (uint32_t)v;
            i += 2;
        } else if (keel__kvc_arg_is(c, i, "FAILURES_BEFORE_CRITICAL") && left >= 1) {
            if (u64_arg(c, i + 1, KEEL_REG_THRESHOLD_CEILING, &v) != 0)
                return REPLIED;
            sp->failures_before_critical = (uint32_t)v;
            i += 2;
        } else {
            return r_err(c->reply, ERR_REG_USAGE);
        }
    }
    return 0;
}

/* The subcommands: name, argc bounds (the command name and subcommand included), kind. */
enum {
    SUB_REGISTER,
    SUB_DEREGISTER,
    SUB_PASS,
    SUB_WARN,
    SUB_FAIL,
    SUB_HEARTBEAT,
    SUB_SERVICES,
    SUB_INSTANCES,
    SUB_GET,
    SUB_INDEX,
    SUB_LIMITS
};
static const struct {
    const char *name;
    size_t argc_min, argc_max;
    unsigned kind;
} SUBS[] = {
    {"REGISTER", 6, SIZE_MAX, KEEL_KV_WRITE},
    {"DEREGISTER", 3, 3, KEEL_KV_WRITE},
    {"PASS", 3, 4, KEEL_KV_WRITE},
    {"WARN", 3, 4, KEEL_KV_WRITE},
    {"FAIL", 3, 4, KEEL_KV_WRITE},
    {"HEARTBEAT", 3, 3, KEEL_KV_WRITE},
    {"SERVICES", 2, 2, KEEL_KV_READ},
    {"INSTANCES", 3, 6, KEEL_KV_READ},
    {"GET", 3, 3, KEEL_KV_READ},
    {"INDEX", 2, 3, KEEL_KV_READ},
    {"LIMITS", 2, 2, KEEL_KV_READ},
};
#define SUBS_LEN (sizeof(SUBS) / sizeof(SUBS[0]))

unsigned keel_kv_registry_kind(const uint8_t *sub, size_t len)
{
    for (size_t i = 0; i < SUBS_LEN; i++) {
        const char *w = SUBS[i].name;
        size_t k = 0;
        while (k < len && w[k] != '\0' &&
               (sub[k] >= 'a' && sub[k] <= 'z' ? sub[k] - 32 : sub[k]) == w[k])
            k++;
        if (k == len && w[k] == '\0')
            return SUBS[i].kind;
    }
    return 0;
}

/* The subcommand of argv[1] for a command of this kind, or REPLIED (usage error). */
static int find_sub(const call_t *c, unsigned kind, int *sub)
{
    for (size_t i = 0; i < SUBS_LEN; i++)
        if (keel__kvc_arg_is(c, 1, SUBS[i].name) && SUBS[i].kind == kind &&
            c->argc >= SUBS[i].argc_min && c->argc <= SUBS[i].argc_max) {
            *sub = (int)i;
            return 0;
        }
    return r_err(c->reply, ERR_REG_USAGE);
}

/* INSTANCES service [PASSING] [TAG tag]: 0, or REPLIED. */
static int parse_instances(const call_t *c, int *passing, size_t *tag_arg)
{
    *passing = 0;
    *tag_arg = 0;
    for (size_t i = 3; i < c->argc; i++) {
        if (keel__kvc_arg_is(c, i, "PASSING"))
            *passing = 1;
        else if (keel__kvc_arg_is(c, i, "TAG") && i + 1 < c->argc)
            *tag_arg = ++i;
        else
            return r_err(c->reply, ERR_REG_USAGE);
    }
    return 0;
}

static int write_syntax(const call_t *c)
{
    int sub;
    if (find_sub(c, KEEL_KV_WRITE, &sub) != 0)
        return REPLIED;
    keel_reg_spec_t sp;
    return sub == SUB_REGISTER ? parse_register(c, &sp) : 0;
}

int keel__kvc_reg_write_syntax(const call_t *c)
{
    return write_syntax(c);
}

int keel__kvc_reg_read_syntax(const call_t *c)
{
    int sub, passing;
    size_t tag;
    if (find_sub(c, KEEL_KV_READ, &sub) != 0)
        return REPLIED;
    return sub == SUB_INSTANCES ? parse_instances(c, &passing, &tag) : 0;
}

/* ---- writes ---------------------------------------------------------------------------- */

static keel_reg_t *reg_get(keel_kv_t *kv)
{
    if (kv->reg != NULL)
        return kv->reg;
    keel_reg_t *reg = malloc(sizeof(*reg));
    if (reg == NULL)
        return NULL;
    if (keel_reg_init(reg, NULL) != 0) {
        free(reg);
        return NULL;
    }
    kv->reg = reg;
    return reg;
}

void keel__kv_reg_free(keel_kv_t *kv)
{
    if (kv->reg == NULL)
        return;
    keel_reg_free(kv->reg);
    free(kv->reg);
    kv->reg = NULL;
}

static int cmd_register(const call_t *c)
{
    keel_reg_spec_t sp;
    if (parse_register(c, &sp) != 0)
        return REPLIED;
    keel_reg_t *reg = reg_get(c->w);
    if (reg == NULL)
        return KEEL_ENOMEM;
    keel_errmsg_t msg = {{0}};
    int rc = keel_reg_register(reg, &sp, c->now, entry_index(c->w), &msg);
    if (rc == KEEL_ENOMEM)
        return rc;
    if (rc == KEEL_EFULL || rc == KEEL_ETOOBIG) {
        if (!c->reply->failed)
            track(c->reply, keel_resp_write_errorf(c->reply->b, "LIMIT registry: %s", msg.text));
        return REPLIED;
    }
    if (rc != 0) {
        if (!c->reply->failed)
            track(c->reply, keel_resp_write_errorf(c->reply->b, "ERR registry: %s", msg.text));
        return REPLIED;
    }
    r_int(c->reply, (int64_t)reg->index);
    return 0;
}

int keel__kvc_cmd_reg_write(const call_t *c)
{
    int sub;
    if (find_sub(c, KEEL_KV_WRITE, &sub) != 0)
        return REPLIED;
    if (sub == SUB_REGISTER)
        return cmd_register(c);
    keel_reg_t *reg = c->w->reg;
    const uint8_t *id = c->argv[2];
    size_t id_len = c->lens[2];
    if (sub == SUB_DEREGISTER) {
        r_int(c->reply,
              reg && keel_reg_deregister(reg, id, id_len, c->now, entry_index(c->w)) == 0);
        return 0;
    }
    if (reg == NULL)
        return r_err(c->reply, ERR_REG_NOTFOUND);
    if (sub == SUB_HEARTBEAT) {
        if (keel_reg_heartbeat(reg, id, id_len, c->now) != 0)
            return r_err(c->reply, ERR_REG_NOTFOUND);
        r_ok(c->reply);
        return 0;
    }
    keel_reg_status_t st = sub == SUB_PASS   ? KEEL_REG_PASSING
                           : sub == SUB_WARN ? KEEL_REG_WARNING
                                             : KEEL_REG_CRITICAL;
    const uint8_t *out = c->argc > 3 ? c->argv[3] : (const uint8_t *)"";
    size_t out_len = c->argc > 3 ? c->lens[3] : 0;
    keel_reg_status_t now;
    int rc = keel_reg_report(reg, id, id_len, st, out, out_len, c->now, entry_index(c->w), &now);
    if (rc == KEEL_ENOMEM)
        return rc;
    if (rc != 0)
        return r_err(c->reply, ERR_REG_NOTFOUND);
    const char *name = keel_reg_status_name(now);
    r_bulk(c->reply, (const uint8_t *)name, strlen(name));
    return 0;
}

/* KEEL.REG.SWEEP now max: the leader's housekeeping (kv_sm.c), like KEEL.EXPIRE.SWEEP. */
int keel__kvc_cmd_reg_sweep(const call_t *c)
{
    int64_t max;
    uint64_t limit = keel__kvc_sweep_args(c, &max);
    size_t n = c->w->reg ? keel_reg_sweep(c->w->reg, limit, (size_t)max, entry_index(c->w)) : 0;
    r_int(c->reply, (int64_t)n);
    return 0;
}

keel_reg_config_t keel_kv_reg_limits(const keel_kv_t *kv)
{
    return kv->reg ? kv->reg->cfg : keel_reg_config_default();
}

/* KEEL.REG.LIMITS name value [name value ...]: pairs of known limits with integers. */
int keel__kvc_reg_limits_syntax(const call_t *c)
{
    if (c->argc < 3 || (c->argc - 1) % 2 != 0)
        return r_err(c->reply, "ERR syntax error: KEEL.REG.LIMITS name value [name value ...]");
    for (size_t i = 1; i < c->argc; i += 2) {
        uint64_t v;
        if (keel_reg_limit_find(c->argv[i], c->lens[i]) < 0)
            return r_err_arg(c->reply, "ERR registry: unknown limit '", c->argv[i], c->lens[i],
                             "'");
        if (u64_arg(c, i + 1, INT64_MAX, &v) != 0)
            return REPLIED;
    }
    return 0;
}

/*
 * KEEL.REG.LIMITS: the limits every replica judges registrations by, proposed by a leader
 * whose --reg-* flags differ from the ones in force (sm/kv_sm.c). Limits not named keep
 * their value. Only later requests are judged by them.
 */
int keel__kvc_cmd_reg_limits(const call_t *c)
{
    if (keel__kvc_reg_limits_syntax(c) != 0)
        return REPLIED;
    keel_reg_t *reg = reg_get(c->w);
    if (reg == NULL)
        return KEEL_ENOMEM;
    keel_reg_config_t cfg = reg->cfg;
    for (size_t i = 1; i < c->argc; i += 2) {
        uint64_t v;
        int rc = u64_arg(c, i + 1, INT64_MAX, &v);
        assert(rc == 0); /* checked by the syntax function */
        (void)rc;
        keel_reg_limit_set(&cfg, (size_t)keel_reg_limit_find(c->argv[i], c->lens[i]), v);
    }
    keel_errmsg_t msg = {{0}};
    if (keel_reg_set_config(reg, &cfg, &msg) != 0) {
        if (!c->reply->failed)
            track(c->reply, keel_resp_write_errorf(c->reply->b, "ERR %s", msg.text));
        return REPLIED;
    }
    r_ok(c->reply);
    return 0;
}

uint64_t keel_kv_next_registry_deadline_ms(const keel_kv_t *kv)
{
    return kv->reg ? keel_reg_next_deadline_ms(kv->reg) : KEEL_KV_NO_DEADLINE;
}

/* ---- reads ------------------------------------------------------------------------------ */

static void r_str(reply_t *o, const keel_reg_str_t *s)
{
    r_bulk(o, s->p, s->n);
}

static void r_cstr(reply_t *o, const char *s)
{
    r_bulk(o, (const uint8_t *)s, strlen(s));
}

/* Field/value pairs of an instance (17 pairs). */
#define INSTANCE_FIELDS 17
static void r_instance(reply_t *o, const keel_reg_instance_t *in, const keel_reg_str_t *service)
{
    r_array(o, 2 * INSTANCE_FIELDS);
    r_cstr(o, "id");
    r_str(o, &in->id);
    r_cstr(o, "service");
    r_str(o, service);
    r_cstr(o, "address");
    r_str(o, &in->address);
    r_cstr(o, "port");
    r_int(o, in->port);
    r_cstr(o, "tags");
    r_array(o, in->tags_n);
    for (size_t i = 0; i < in->tags_n; i++)
        r_str(o, &in->tags[i]);
    r_cstr(o, "meta");
    r_array(o, in->meta_n);
    for (size_t i = 0; i < in->meta_n; i++)
        r_str(o, &in->meta[i]);
    r_cstr(o, "weight_passing");
    r_int(o, in->weight_passing);
    r_cstr(o, "weight_warning");
    r_int(o, in->weight_warning);
    r_cstr(o, "version");
    r_str(o, &in->version);
    r_cstr(o, "status");
    r_cstr(o, keel_reg_status_name(in->status));
    r_cstr(o, "output");
    r_str(o, &in->output);
    r_cstr(o, "flips");
    r_int(o, (int64_t)in->flips);
    r_cstr(o, "ttl_ms");
    r_int(o, (int64_t)in->ttl_ms);
    r_cstr(o, "deregister_critical_after_ms");
    r_int(o, (int64_t)in->dca_ms);
    r_cstr(o, "deadline_ms");
    r_int(o, in->deadline_ms == KEEL_REG_NO_DEADLINE ? -1 : (int64_t)in->deadline_ms);
    r_cstr(o, "create_index");
    r_int(o, (int64_t)in->create_index);
    r_cstr(o, "modify_index");
    r_int(o, (int64_t)in->modify_index);
}

/* The instance passes INSTANCES' filters. */
static int wanted(const call_t *c, const keel_reg_instance_t *in, int passing, size_t tag)
{
    if (!keel_reg_alive(in, c->now))
        return 0;
    if (passing && in->status != KEEL_REG_PASSING)
        return 0;
    return tag == 0 || keel_reg_has_tag(in, c->argv[tag], c->lens[tag]);
}

static void cmd_instances(const call_t *c, const keel_reg_t *reg)
{
    int passing;
    size_t tag;
    int rc = parse_instances(c, &passing, &tag);
    assert(rc == 0); /* checked by the syntax function */
    (void)rc;
    const keel_reg_service_t *s = reg ? keel_reg_service(reg, c->argv[2], c->lens[2]) : NULL;
    r_array(c->reply, 2);
    r_int(c->reply, reg ? (int64_t)keel_reg_service_index(reg, c->argv[2], c->lens[2]) : 0);
    size_t n = 0;
    for (size_t i = 0; s && i < s->n; i++)
        n += wanted(c, s->inst[i], passing, tag);
    r_array(c->reply, n);
    for (size_t i = 0; s && i < s->n; i++)
        if (wanted(c, s->inst[i], passing, tag))
            r_instance(c->reply, s->inst[i], &s->name);
}

static int tag_cmp(const void *a, const void *b)
{
    const keel_reg_str_t *x = *(const keel_reg_str_t *const *)a;
    const keel_reg_str_t *y = *(const keel_reg_str_t *const *)b;
    size_t m = x->n < y->n ? x->n : y->n;
    int r = m ? memcmp(x->p, y->p, m) : 0;
    return r ? r : (x->n > y->n) - (x->n < y->n);
}

/* Every tag of the service's live instances, sorted and once each (a scratch array). */
static int service_tags(const keel_reg_service_t *s, uint64_t now, const keel_reg_str_t ***out,
                        size_t *n_out)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += keel_reg_alive(s->inst[i], now) ? s->inst[i]->tags_n : 0;
    const keel_reg_str_t **t = malloc((n ? n : 1) * sizeof(*t));
    if (t == NULL)
        return KEEL_ENOMEM;
    n = 0;
    for (size_t i = 0; i < s->n; i++)
        for (size_t k = 0; keel_reg_alive(s->inst[i], now) && k < s->inst[i]->tags_n; k++)
            t[n++] = &s->inst[i]->tags[k];
    qsort(t, n, sizeof(*t), tag_cmp);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || tag_cmp(&t[u - 1], &t[i]) != 0)
            t[u++] = t[i];
    *out = t;
    *n_out = u;
    return 0;
}

static int cmd_services(const call_t *c, const keel_reg_t *reg)
{
    size_t live = 0;
    for (size_t i = 0; reg && i < reg->svc_n; i++)
        live += keel_reg_service_live(reg->svc[i], c->now) > 0;
    r_array(c->reply, 2);
    r_int(c->reply, reg ? (int64_t)reg->index : 0);
    r_array(c->reply, live);
    for (size_t i = 0; reg && i < reg->svc_n; i++) {
        const keel_reg_service_t *s = reg->svc[i];
        size_t n = keel_reg_service_live(s, c->now), tn;
        if (n == 0)
            continue;
        const keel_reg_str_t **tags;
        if (service_tags(s, c->now, &tags, &tn) != 0)
            return KEEL_ENOMEM;
        r_array(c->reply, 3);
        r_str(c->reply, &s->name);
        r_int(c->reply, (int64_t)n);
        r_array(c->reply, tn);
        for (size_t k = 0; k < tn; k++)
            r_str(c->reply, tags[k]);
        free(tags);
    }
    return 0;
}

int keel__kvc_cmd_reg_read(const call_t *c)
{
    int sub;
    if (find_sub(c, KEEL_KV_READ, &sub) != 0)
        return REPLIED;
    const keel_reg_t *reg = c->kv->reg;
    if (sub == SUB_SERVICES)
        return cmd_services(c, reg);
    if (sub == SUB_INSTANCES) {
        cmd_instances(c, reg);
        return 0;
    }
    if (sub == SUB_LIMITS) {
        keel_reg_config_t cfg = keel_kv_reg_limits(c->kv);
        r_array(c->reply, 2 * KEEL_REG_LIMITS_COUNT);
        for (size_t i = 0; i < KEEL_REG_LIMITS_COUNT; i++) {
            r_cstr(c->reply, keel_reg_limit_name(i));
            r_int(c->reply, (int64_t)keel_reg_limit_get(&cfg, i));
        }
        return 0;
    }
    if (sub == SUB_INDEX) {
        uint64_t ix = reg == NULL    ? 0
                      : c->argc == 3 ? keel_reg_service_index(reg, c->argv[2], c->lens[2])
                                     : reg->index;
        r_int(c->reply, (int64_t)ix);
        return 0;
    }
    const keel_reg_instance_t *in = reg ? keel_reg_find(reg, c->argv[2], c->lens[2], c->now) : NULL;
    if (in)
        r_instance(c->reply, in, &in->svc->name);
    else
        r_nil(c->reply);
    return 0;
}

/* ---- the feed's pushes (KEEL.REG FEED, server/regfeed.c) --------------------------------- */

int keel_kv_reg_feed_state(const keel_kv_t *kv, uint64_t now_ms, const uint8_t *service,
                           size_t service_len, keel_buf_t *out)
{
    const keel_reg_t *reg = kv->reg;
    reply_t o = {.b = out, .mark = keel_buf_unread(out)};
    uint64_t ix = reg ? reg->index : 0; /* the feed's position, whatever the service */
    const keel_reg_service_t *one =
        reg && service ? keel_reg_service(reg, service, service_len) : NULL;
    size_t n = 0;
    for (size_t i = 0; reg && i < reg->svc_n; i++)
        if (service == NULL || reg->svc[i] == one)
            n += keel_reg_service_live(reg->svc[i], now_ms);
    r_array(&o, 3);
    r_cstr(&o, "regstate");
    r_int(&o, (int64_t)ix);
    r_array(&o, n);
    for (size_t i = 0; reg && i < reg->svc_n; i++) {
        const keel_reg_service_t *s = reg->svc[i];
        if (service != NULL && s != one)
            continue;
        for (size_t k = 0; k < s->n; k++)
            if (keel_reg_alive(s->inst[k], now_ms))
                r_instance(&o, s->inst[k], &s->name);
    }
    return o.failed;
}

int keel_kv_reg_feed_event(const keel_reg_event_t *ev, keel_buf_t *out)
{
    reply_t o = {.b = out, .mark = keel_buf_unread(out)};
    r_array(&o, 4);
    r_cstr(&o, "regchange");
    r_int(&o, (int64_t)ev->index);
    r_cstr(&o, keel_reg_event_op_name(ev->op));
    r_instance(&o, ev->inst, &ev->service);
    return o.failed;
}
