/* registry_snap.c - the registry's section of a keel server snapshot, limits included. */
#include "core/registry_int.h"

#include "base/bytes.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- snapshot section ------------------------------------------------------------------- */

typedef struct wr {
    keel_reg_sink_fn sink;
    void *data;
    int rc;
} wr_t;

static void w_bytes(wr_t *w, const void *p, size_t n)
{
    if (w->rc == 0 && n > 0)
        w->rc = w->sink(w->data, p, n);
}

static void w_u8(wr_t *w, uint8_t v)
{
    w_bytes(w, &v, 1);
}

static void w_u32(wr_t *w, uint32_t v)
{
    uint8_t b[4];
    keel_put_u32(b, v);
    w_bytes(w, b, 4);
}

static void w_u64(wr_t *w, uint64_t v)
{
    uint8_t b[8];
    keel_put_u64(b, v);
    w_bytes(w, b, 8);
}

static void w_str(wr_t *w, const keel_reg_str_t *s)
{
    w_u32(w, (uint32_t)s->n);
    w_bytes(w, s->p, s->n);
}

static void w_inst(wr_t *w, const keel_reg_instance_t *in)
{
    w_str(w, &in->id);
    w_str(w, &in->address);
    w_str(w, &in->version);
    w_u32(w, in->port);
    w_u32(w, in->weight_passing);
    w_u32(w, in->weight_warning);
    w_u32(w, (uint32_t)in->tags_n);
    for (size_t i = 0; i < in->tags_n; i++)
        w_str(w, &in->tags[i]);
    w_u32(w, (uint32_t)in->meta_n);
    for (size_t i = 0; i < in->meta_n; i++)
        w_str(w, &in->meta[i]);
    w_u8(w, (uint8_t)in->status);
    w_u8(w, in->pending_dir > 0 ? 1 : in->pending_dir < 0 ? 2 : 0);
    w_u32(w, in->pending_count);
    w_u32(w, in->success_before_passing);
    w_u32(w, in->failures_before_critical);
    w_u64(w, in->flips);
    w_u64(w, in->ttl_ms);
    w_u64(w, in->ttl_deadline_ms);
    w_u64(w, in->dca_ms);
    w_u64(w, in->critical_since_ms);
    w_u64(w, in->create_index);
    w_u64(w, in->modify_index);
    w_str(w, &in->output);
}

static int count_sink(void *data, const uint8_t *p, size_t n)
{
    (void)p;
    *(uint64_t *)data += n;
    return 0;
}

int keel_reg_snapshot_write(const keel_reg_t *reg, keel_reg_sink_fn sink, void *data)
{
    wr_t w = {sink, data, 0};
    w_u32(&w, KEEL_REG_LIMITS_COUNT);
    for (size_t i = 0; i < KEEL_REG_LIMITS_COUNT; i++)
        w_u64(&w, keel_reg_limit_get(&reg->cfg, i));
    w_u64(&w, reg->index);
    w_u64(&w, reg->instances);
    w_u32(&w, (uint32_t)reg->svc_n);
    for (size_t i = 0; i < reg->svc_n; i++) {
        const keel_reg_service_t *s = reg->svc[i];
        w_str(&w, &s->name);
        w_u64(&w, s->create_index);
        w_u64(&w, s->modify_index);
        w_u32(&w, (uint32_t)s->n);
        for (size_t k = 0; k < s->n; k++)
            w_inst(&w, s->inst[k]);
    }
    return w.rc;
}

uint64_t keel_reg_snapshot_bytes(const keel_reg_t *reg)
{
    uint64_t n = 0;
    int rc = keel_reg_snapshot_write(reg, count_sink, &n);
    assert(rc == 0);
    (void)rc;
    return n;
}

/* Reads a str of at most max bytes (pointing into the data). */
static const uint8_t *r_str(keel_rd_t *r, size_t max, size_t *n)
{
    *n = keel_rd_u32(r);
    if (*n > max) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = keel_rd_bytes(r, *n);
    return p ? p : (const uint8_t *)"";
}

#define LOAD_TAGS_MAX KEEL_REG_TAGS_CEILING
#define LOAD_META_MAX (2u * KEEL_REG_META_PAIRS_CEILING)

typedef struct load_scratch {
    const uint8_t *tags[LOAD_TAGS_MAX];
    size_t tag_lens[LOAD_TAGS_MAX];
    const uint8_t *meta[LOAD_META_MAX];
    size_t meta_lens[LOAD_META_MAX];
} load_scratch_t;

static int load_inst(keel_reg_t *reg, keel_rd_t *r, keel_reg_service_t **svc, size_t svc_at,
                     const keel_reg_str_t *svc_name, load_scratch_t *sc,
                     const keel_reg_instance_t *prev, keel_errmsg_t *msg)
{
    const keel_reg_config_t *c = &reg->cfg;
    keel_reg_spec_t sp = {0};
    sp.service = svc_name->p;
    sp.service_len = svc_name->n;
    sp.id = r_str(r, c->name_bytes_max, &sp.id_len);
    sp.address = r_str(r, c->address_bytes_max, &sp.address_len);
    sp.version = r_str(r, c->name_bytes_max, &sp.version_len);
    sp.port = keel_rd_u32(r);
    sp.weight_passing = keel_rd_u32(r);
    sp.weight_warning = keel_rd_u32(r);
    sp.tags_n = keel_rd_u32(r);
    if (r->bad || sp.tags_n > c->tags_max)
        return keel_errf(msg, KEEL_EPROTO, "registry section: instance truncated or too many tags");
    for (size_t i = 0; i < sp.tags_n; i++)
        sc->tags[i] = r_str(r, c->tag_bytes_max, &sc->tag_lens[i]);
    sp.meta_n = keel_rd_u32(r);
    if (r->bad || sp.meta_n > LOAD_META_MAX)
        return keel_errf(msg, KEEL_EPROTO, "registry section: bad metadata count");
    for (size_t i = 0; i < sp.meta_n; i++)
        sc->meta[i] = r_str(r, c->meta_bytes_max, &sc->meta_lens[i]);
    sp.tags = sc->tags, sp.tag_lens = sc->tag_lens;
    sp.meta = sc->meta, sp.meta_lens = sc->meta_lens;
    uint8_t status = keel_rd_u8(r), pending = keel_rd_u8(r);
    uint32_t pending_count = keel_rd_u32(r);
    sp.success_before_passing = keel_rd_u32(r);
    sp.failures_before_critical = keel_rd_u32(r);
    uint64_t flips = keel_rd_u64(r);
    sp.ttl_ms = keel_rd_u64(r);
    uint64_t ttl_deadline = keel_rd_u64(r);
    sp.dca_ms = keel_rd_u64(r);
    uint64_t critical_since = keel_rd_u64(r);
    uint64_t create = keel_rd_u64(r), modify = keel_rd_u64(r);
    size_t out_n;
    const uint8_t *out = r_str(r, c->output_bytes_max, &out_n);
    sp.status = status;
    if (r->bad)
        return keel_errf(msg, KEEL_EPROTO, "registry section: instance truncated");
    if (status > KEEL_REG_CRITICAL || pending > 2 || sp.success_before_passing == 0 ||
        sp.failures_before_critical == 0 || sp.weight_passing == 0 || sp.weight_warning == 0 ||
        (pending == 0) != (pending_count == 0) ||
        create > modify || /* moved: older than its service */
        modify > reg->index || (sp.ttl_ms == 0) != (ttl_deadline == 0) ||
        (status != KEEL_REG_CRITICAL && critical_since != 0))
        return keel_errf(msg, KEEL_EPROTO, "registry section: instance fields inconsistent");
    if (prev && keel__reg_bytes_cmp(prev->id.p, prev->id.n, sp.id, sp.id_len) >= 0)
        return keel_errf(msg, KEEL_EPROTO, "registry section: instances out of order");
    if (keel__reg_find_any(reg, sp.id, sp.id_len) != NULL)
        return keel_errf(msg, KEEL_EPROTO, "registry section: duplicate instance id");
    int rc = keel__reg_check_spec(c, &sp, msg);
    if (rc == 0)
        rc = keel__reg_check_room(reg, &sp, *svc, NULL, msg);
    if (rc != 0)
        return rc;
    keel_reg_instance_t *in = keel__reg_inst_new(&sp);
    if (in != NULL)
        keel__reg_str_free(&in->output);
    if (in == NULL || keel__reg_str_set(&in->output, out, out_n) != 0) {
        keel__reg_inst_free(in);
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    }
    in->status = (keel_reg_status_t)status;
    in->pending_dir = pending == 1 ? 1 : pending == 2 ? -1 : 0;
    in->pending_count = pending_count;
    in->flips = flips;
    in->ttl_deadline_ms = ttl_deadline;
    in->critical_since_ms = critical_since;
    in->create_index = create;
    in->modify_index = modify;
    uint64_t keep = reg->index;
    rc = keel__reg_link_new(reg, *svc, svc_at, in, &sp, create);
    reg->index = keep;
    if (rc != 0) {
        keel__reg_inst_free(in);
        return keel_errf(msg, rc, "out of memory");
    }
    *svc = in->svc;
    keel__reg_inst_deadline(reg, in, 1);
    return 0;
}

static int load(keel_reg_t *reg, const uint8_t *p, size_t len, keel_errmsg_t *msg)
{
    keel_rd_t r;
    keel_rd_init(&r, p, len);
    reg->index = keel_rd_u64(&r);
    uint64_t instances = keel_rd_u64(&r);
    uint32_t services = keel_rd_u32(&r);
    if (r.bad || services > reg->cfg.services_max || instances > reg->cfg.instances_max)
        return keel_errf(msg, KEEL_EPROTO, "registry section: bad header");
    load_scratch_t *sc = malloc(sizeof(*sc));
    if (sc == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < services; i++) {
        keel_reg_str_t name;
        name.p = (uint8_t *)r_str(&r, reg->cfg.name_bytes_max, &name.n);
        uint64_t create = keel_rd_u64(&r), modify = keel_rd_u64(&r);
        uint32_t n = keel_rd_u32(&r);
        if (r.bad || n == 0 || name.n == 0 || create > modify || modify > reg->index) {
            rc = keel_errf(msg, KEEL_EPROTO, "registry section: service %u malformed", i);
            break;
        }
        if (reg->svc_n &&
            keel__reg_bytes_cmp(reg->svc[reg->svc_n - 1]->name.p, reg->svc[reg->svc_n - 1]->name.n,
                                name.p, name.n) >= 0) {
            rc = keel_errf(msg, KEEL_EPROTO, "registry section: services out of order");
            break;
        }
        keel_reg_service_t *s = NULL;
        for (uint32_t k = 0; rc == 0 && k < n; k++)
            rc = load_inst(reg, &r, &s, reg->svc_n, &name, sc, k ? s->inst[k - 1] : NULL, msg);
        if (rc == 0) {
            s->create_index = create;
            s->modify_index = modify;
        }
    }
    free(sc);
    if (rc == 0 && (r.bad || r.left != 0))
        rc = keel_errf(msg, KEEL_EPROTO, "registry section: %zu bytes after the last instance",
                       r.left);
    if (rc == 0 && reg->instances != instances)
        rc = keel_errf(msg, KEEL_EPROTO, "registry section: instance count %llu, found %zu",
                       (unsigned long long)instances, reg->instances);
    return rc;
}

/* The limits block (section 2): exactly KEEL_REG_LIMITS_COUNT values that validate. */
static int load_limits(keel_rd_t *r, keel_reg_config_t *cfg, keel_errmsg_t *msg)
{
    uint32_t n = keel_rd_u32(r);
    if (r->bad || n != KEEL_REG_LIMITS_COUNT)
        return keel_errf(msg, KEEL_EPROTO, "registry section: %u limits (this version knows %u)", n,
                         KEEL_REG_LIMITS_COUNT);
    for (size_t i = 0; i < KEEL_REG_LIMITS_COUNT; i++)
        keel_reg_limit_set(cfg, i, keel_rd_u64(r));
    if (r->bad || keel_reg_config_validate(cfg, NULL) != 0)
        return keel_errf(msg, KEEL_EPROTO, "registry section: limits truncated or out of range");
    return 0;
}

int keel_reg_snapshot_load(keel_reg_t *reg_new, const uint8_t *p, size_t len, int limits,
                           keel_errmsg_t *msg)
{
    assert(reg_new->instances == 0 && reg_new->svc_n == 0);
    keel_reg_config_t before = reg_new->cfg, cfg = reg_new->cfg;
    keel_rd_t r;
    keel_rd_init(&r, p, len);
    int rc = limits ? load_limits(&r, &cfg, msg) : 0;
    if (rc == 0) {
        /* what was registered under older (higher) limits loads: judged by the ceilings */
        reg_new->cfg = keel_reg_config_ceiling();
        rc = load(reg_new, p + (len - r.left), r.left, msg);
    }
    if (rc != 0) {
        keel_reg_free(reg_new);
        if (keel_reg_init(reg_new, &before) != 0)
            memset(reg_new, 0, sizeof(*reg_new)); /* no memory even for an empty map */
        return rc;
    }
    reg_new->cfg = cfg;
    keel__reg_hist_free(reg_new);
    keel__reg_hist_init(reg_new, reg_new->index + 1);
    return 0;
}
