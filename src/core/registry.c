/* registry.c - the service registry: instances with TTLs, health with flap damping (pure). */
#include "core/registry_int.h"

#include "base/bytes.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static const char *const STATUS_NAMES[] = {"passing", "warning", "critical"};

const char *keel_reg_status_name(keel_reg_status_t s)
{
    assert(s >= KEEL_REG_PASSING && s <= KEEL_REG_CRITICAL);
    return STATUS_NAMES[s];
}

int keel_reg_status_parse(const uint8_t *p, size_t n, keel_reg_status_t *out)
{
    for (int s = 0; s < 3; s++) {
        const char *w = STATUS_NAMES[s];
        size_t k = 0;
        while (k < n && w[k] != '\0' && (p[k] | 0x20) == w[k])
            k++;
        if (k == n && w[k] == '\0') {
            *out = (keel_reg_status_t)s;
            return 0;
        }
    }
    return KEEL_EINVAL;
}

/* ---- strings ---------------------------------------------------------------------- */

int keel__reg_str_set(keel_reg_str_t *s, const uint8_t *p, size_t n)
{
    s->p = malloc(n + 1);
    if (s->p == NULL)
        return KEEL_ENOMEM;
    if (n)
        memcpy(s->p, p, n);
    s->p[n] = '\0';
    s->n = n;
    return 0;
}

void keel__reg_str_free(keel_reg_str_t *s)
{
    free(s->p);
    s->p = NULL;
    s->n = 0;
}

static int str_eq(const keel_reg_str_t *s, const uint8_t *p, size_t n)
{
    return s->n == n && (n == 0 || memcmp(s->p, p, n) == 0);
}

/* Byte order, then length: the order of names and ids everywhere. */
int keel__reg_bytes_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t m = an < bn ? an : bn;
    int c = m ? memcmp(a, b, m) : 0;
    if (c != 0)
        return c;
    return an < bn ? -1 : an > bn;
}

/* ---- instances -------------------------------------------------------------------- */

void keel__reg_inst_free(keel_reg_instance_t *in)
{
    if (in == NULL)
        return;
    keel__reg_str_free(&in->id);
    keel__reg_str_free(&in->address);
    keel__reg_str_free(&in->version);
    keel__reg_str_free(&in->output);
    for (size_t i = 0; i < in->tags_n; i++)
        keel__reg_str_free(&in->tags[i]);
    for (size_t i = 0; i < in->meta_n; i++)
        keel__reg_str_free(&in->meta[i]);
    free(in->tags);
    free(in->meta);
    free(in);
}

/* The definition part of an instance (no health), built whole before anything links it. */
keel_reg_instance_t *keel__reg_inst_new(const keel_reg_spec_t *sp)
{
    keel_reg_instance_t *in = calloc(1, sizeof(*in));
    if (in == NULL)
        return NULL;
    int rc = keel__reg_str_set(&in->id, sp->id, sp->id_len);
    if (rc == 0)
        rc = keel__reg_str_set(&in->address, sp->address, sp->address_len);
    if (rc == 0)
        rc = keel__reg_str_set(&in->version, sp->version, sp->version_len);
    if (rc == 0)
        rc = keel__reg_str_set(&in->output, (const uint8_t *)"", 0);
    if (rc == 0 && sp->tags_n && (in->tags = calloc(sp->tags_n, sizeof(*in->tags))) == NULL)
        rc = KEEL_ENOMEM;
    for (size_t i = 0; rc == 0 && i < sp->tags_n; i++, in->tags_n++)
        rc = keel__reg_str_set(&in->tags[i], sp->tags[i], sp->tag_lens[i]);
    if (rc == 0 && sp->meta_n && (in->meta = calloc(sp->meta_n, sizeof(*in->meta))) == NULL)
        rc = KEEL_ENOMEM;
    for (size_t i = 0; rc == 0 && i < sp->meta_n; i++, in->meta_n++)
        rc = keel__reg_str_set(&in->meta[i], sp->meta[i], sp->meta_lens[i]);
    if (rc != 0) {
        keel__reg_inst_free(in);
        return NULL;
    }
    in->port = sp->port;
    in->weight_passing = sp->weight_passing ? sp->weight_passing : 1;
    in->weight_warning = sp->weight_warning ? sp->weight_warning : 1;
    in->ttl_ms = sp->ttl_ms;
    in->dca_ms = sp->dca_ms;
    in->success_before_passing = sp->success_before_passing ? sp->success_before_passing : 1;
    in->failures_before_critical = sp->failures_before_critical ? sp->failures_before_critical : 1;
    in->deadline_ms = KEEL_REG_NO_DEADLINE;
    return in;
}

/* The same definition (everything a registration sets but health and deadlines). */
static int inst_same(const keel_reg_instance_t *a, const keel_reg_instance_t *b)
{
    if (!str_eq(&a->address, b->address.p, b->address.n) ||
        !str_eq(&a->version, b->version.p, b->version.n) || a->port != b->port ||
        a->weight_passing != b->weight_passing || a->weight_warning != b->weight_warning ||
        a->ttl_ms != b->ttl_ms || a->dca_ms != b->dca_ms ||
        a->success_before_passing != b->success_before_passing ||
        a->failures_before_critical != b->failures_before_critical || a->tags_n != b->tags_n ||
        a->meta_n != b->meta_n)
        return 0;
    for (size_t i = 0; i < a->tags_n; i++)
        if (!str_eq(&a->tags[i], b->tags[i].p, b->tags[i].n))
            return 0;
    for (size_t i = 0; i < a->meta_n; i++)
        if (!str_eq(&a->meta[i], b->meta[i].p, b->meta[i].n))
            return 0;
    return 1;
}

int keel_reg_alive(const keel_reg_instance_t *in, uint64_t now_ms)
{
    return in->deadline_ms > now_ms;
}

/* ---- the deadline heap (min-heap on deadline_ms, positions kept in the instances) ---- */

static void heap_set(keel_reg_t *reg, size_t i, keel_reg_instance_t *in)
{
    reg->heap[i] = in;
    in->heap_pos = i;
}

static void heap_up(keel_reg_t *reg, size_t i)
{
    keel_reg_instance_t *in = reg->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (reg->heap[p]->deadline_ms <= in->deadline_ms)
            break;
        heap_set(reg, i, reg->heap[p]);
        i = p;
    }
    heap_set(reg, i, in);
}

static void heap_down(keel_reg_t *reg, size_t i)
{
    keel_reg_instance_t *in = reg->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        uint64_t best = in->deadline_ms;
        if (l < reg->heap_n && reg->heap[l]->deadline_ms < best)
            m = l, best = reg->heap[l]->deadline_ms;
        if (l + 1 < reg->heap_n && reg->heap[l + 1]->deadline_ms < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(reg, i, reg->heap[m]);
        i = m;
    }
    heap_set(reg, i, in);
}

static void heap_remove(keel_reg_t *reg, keel_reg_instance_t *in)
{
    size_t i = in->heap_pos;
    assert(i < reg->heap_n && reg->heap[i] == in);
    keel_reg_instance_t *last = reg->heap[--reg->heap_n];
    if (last != in) {
        heap_set(reg, i, last);
        heap_up(reg, i);
        heap_down(reg, last->heap_pos);
    }
}

/* heap_cap is kept >= instances + 1 by the callers (reserve before linking). */
static int heap_reserve(keel_reg_t *reg, size_t n)
{
    if (n <= reg->heap_cap)
        return 0;
    size_t cap = reg->heap_cap ? reg->heap_cap * 2 : 16;
    while (cap < n)
        cap *= 2;
    keel_reg_instance_t **h = realloc(reg->heap, cap * sizeof(*h));
    if (h == NULL)
        return KEEL_ENOMEM;
    reg->heap = h;
    reg->heap_cap = cap;
    return 0;
}

/* Recomputes the instance's deadline from its TTL and critical timeout; fixes the heap. */
void keel__reg_inst_deadline(keel_reg_t *reg, keel_reg_instance_t *in, int linked)
{
    uint64_t d = KEEL_REG_NO_DEADLINE;
    if (in->ttl_ms)
        d = in->ttl_deadline_ms;
    if (in->dca_ms && in->status == KEEL_REG_CRITICAL && in->critical_since_ms + in->dca_ms < d)
        d = in->critical_since_ms + in->dca_ms;
    int had = linked && in->deadline_ms != KEEL_REG_NO_DEADLINE;
    in->deadline_ms = d;
    if (had && d == KEEL_REG_NO_DEADLINE) {
        heap_remove(reg, in);
    } else if (had) {
        heap_up(reg, in->heap_pos);
        heap_down(reg, in->heap_pos);
    } else if (linked && d != KEEL_REG_NO_DEADLINE) {
        assert(reg->heap_n < reg->heap_cap);
        heap_set(reg, reg->heap_n++, in);
        heap_up(reg, in->heap_pos);
    }
}

uint64_t keel_reg_next_deadline_ms(const keel_reg_t *reg)
{
    return reg->heap_n ? reg->heap[0]->deadline_ms : KEEL_REG_NO_DEADLINE;
}

/* ---- services ----------------------------------------------------------------------- */

/* The position of name in the sorted services (found or where it would go). */
static size_t svc_pos(const keel_reg_t *reg, const uint8_t *name, size_t n, int *found)
{
    size_t lo = 0, hi = reg->svc_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = keel__reg_bytes_cmp(reg->svc[mid]->name.p, reg->svc[mid]->name.n, name, n);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static size_t inst_pos(const keel_reg_service_t *s, const uint8_t *id, size_t n, int *found)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = keel__reg_bytes_cmp(s->inst[mid]->id.p, s->inst[mid]->id.n, id, n);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

const keel_reg_service_t *keel_reg_service(const keel_reg_t *reg, const uint8_t *name, size_t n)
{
    int found;
    size_t i = svc_pos(reg, name, n, &found);
    return found ? reg->svc[i] : NULL;
}

uint64_t keel_reg_service_index(const keel_reg_t *reg, const uint8_t *name, size_t n)
{
    const keel_reg_service_t *s = keel_reg_service(reg, name, n);
    return s ? s->modify_index : reg->index;
}

size_t keel_reg_service_live(const keel_reg_service_t *s, uint64_t now_ms)
{
    size_t live = 0;
    for (size_t i = 0; i < s->n; i++)
        live += keel_reg_alive(s->inst[i], now_ms);
    return live;
}

static void touch(keel_reg_t *reg, keel_reg_service_t *s, uint64_t index)
{
    if (index > s->modify_index)
        s->modify_index = index;
    if (index > reg->index)
        reg->index = index;
}

/* Unlinks and frees an instance; its service goes too when it was the last. */
static void inst_remove(keel_reg_t *reg, keel_reg_instance_t *in, keel_reg_event_op_t op,
                        uint64_t index)
{
    keel__reg_hist_record(reg, op, in, index);
    keel_reg_service_t *s = in->svc;
    int found;
    size_t i = inst_pos(s, in->id.p, in->id.n, &found);
    assert(found && s->inst[i] == in);
    memmove(&s->inst[i], &s->inst[i + 1], (s->n - i - 1) * sizeof(*s->inst));
    s->n--;
    if (in->deadline_ms != KEEL_REG_NO_DEADLINE)
        heap_remove(reg, in);
    void *old = NULL;
    int rc = keel_map_del(&reg->by_id, in->id.p, in->id.n, &old);
    assert(rc == 0 && old == in);
    (void)rc;
    reg->instances--;
    touch(reg, s, index);
    keel__reg_inst_free(in);
    if (s->n > 0)
        return;
    size_t j = svc_pos(reg, s->name.p, s->name.n, &found);
    assert(found && reg->svc[j] == s);
    memmove(&reg->svc[j], &reg->svc[j + 1], (reg->svc_n - j - 1) * sizeof(*reg->svc));
    reg->svc_n--;
    keel__reg_str_free(&s->name);
    free(s->inst);
    free(s);
}

keel_reg_instance_t *keel__reg_find_any(const keel_reg_t *reg, const uint8_t *id, size_t n)
{
    void **v = keel_map_get(&reg->by_id, id, n);
    return v ? *v : NULL;
}

const keel_reg_instance_t *keel_reg_find(const keel_reg_t *reg, const uint8_t *id, size_t n,
                                         uint64_t now_ms)
{
    const keel_reg_instance_t *in = keel__reg_find_any(reg, id, n);
    return in && keel_reg_alive(in, now_ms) ? in : NULL;
}

int keel_reg_has_tag(const keel_reg_instance_t *in, const uint8_t *tag, size_t n)
{
    for (size_t i = 0; i < in->tags_n; i++)
        if (str_eq(&in->tags[i], tag, n))
            return 1;
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

int keel_reg_init(keel_reg_t *reg, const keel_reg_config_t *cfg)
{
    memset(reg, 0, sizeof(*reg));
    reg->cfg = cfg ? *cfg : keel_reg_config_default();
    if (keel_reg_config_validate(&reg->cfg, NULL) != 0)
        return KEEL_EINVAL;
    keel__reg_hist_init(reg, 1);
    /* the map's own bound is the ceiling: instances_max may be raised later (set_config) */
    return keel_map_init(&reg->by_id, 16, KEEL_REG_INSTANCES_CEILING, 0x72656769);
}

int keel_reg_set_config(keel_reg_t *reg, const keel_reg_config_t *cfg, keel_errmsg_t *msg)
{
    int rc = keel_reg_config_validate(cfg, msg);
    if (rc == 0)
        reg->cfg = *cfg;
    return rc;
}

void keel_reg_free(keel_reg_t *reg)
{
    for (size_t i = 0; i < reg->svc_n; i++) {
        keel_reg_service_t *s = reg->svc[i];
        for (size_t k = 0; k < s->n; k++)
            keel__reg_inst_free(s->inst[k]);
        keel__reg_str_free(&s->name);
        free(s->inst);
        free(s);
    }
    free(reg->svc);
    free(reg->heap);
    keel__reg_hist_free(reg);
    keel_map_free(&reg->by_id, NULL);
    memset(reg, 0, sizeof(*reg));
}

/* ---- registration ------------------------------------------------------------------------ */

int keel__reg_check_spec(const keel_reg_config_t *c, const keel_reg_spec_t *sp, keel_errmsg_t *msg)
{
    if (sp->service_len == 0 || sp->id_len == 0)
        return keel_errf(msg, KEEL_EINVAL, "service name and instance id must not be empty");
    if (sp->service_len > c->name_bytes_max || sp->id_len > c->name_bytes_max ||
        sp->version_len > c->name_bytes_max)
        return keel_errf(msg, KEEL_ETOOBIG,
                         "service name, instance id or version over name_bytes_max %zu",
                         c->name_bytes_max);
    if (sp->address_len > c->address_bytes_max)
        return keel_errf(msg, KEEL_ETOOBIG, "address over address_bytes_max %zu",
                         c->address_bytes_max);
    if (sp->port > KEEL_REG_PORT_MAX)
        return keel_errf(msg, KEEL_EINVAL, "port %u not in 0..65535", sp->port);
    if (sp->tags_n > c->tags_max)
        return keel_errf(msg, KEEL_EFULL, "%zu tags over tags_max %zu", sp->tags_n, c->tags_max);
    for (size_t i = 0; i < sp->tags_n; i++)
        if (sp->tag_lens[i] > c->tag_bytes_max)
            return keel_errf(msg, KEEL_ETOOBIG, "a tag over tag_bytes_max %zu", c->tag_bytes_max);
    if (sp->meta_n % 2 != 0)
        return keel_errf(msg, KEEL_EINVAL, "metadata must be key/value pairs");
    if (sp->meta_n / 2 > c->meta_pairs_max)
        return keel_errf(msg, KEEL_EFULL, "%zu metadata keys over meta_pairs_max %zu",
                         sp->meta_n / 2, c->meta_pairs_max);
    size_t bytes = 0;
    for (size_t i = 0; i < sp->meta_n; i++) {
        bytes += sp->meta_lens[i];
        if (bytes > c->meta_bytes_max)
            return keel_errf(msg, KEEL_ETOOBIG, "metadata over meta_bytes_max %zu",
                             c->meta_bytes_max);
    }
    for (size_t i = 0; i < sp->meta_n; i += 2) {
        if (sp->meta_lens[i] == 0)
            return keel_errf(msg, KEEL_EINVAL, "a metadata key is empty");
        for (size_t k = 0; k < i; k += 2)
            if (keel__reg_bytes_cmp(sp->meta[i], sp->meta_lens[i], sp->meta[k], sp->meta_lens[k]) ==
                0)
                return keel_errf(msg, KEEL_EINVAL, "metadata key '%.*s' given twice",
                                 (int)(sp->meta_lens[i] > 64 ? 64 : sp->meta_lens[i]),
                                 (const char *)sp->meta[i]);
    }
    if (sp->weight_passing > KEEL_REG_WEIGHT_MAX || sp->weight_warning > KEEL_REG_WEIGHT_MAX)
        return keel_errf(msg, KEEL_EINVAL, "weights must be in 0..%u", KEEL_REG_WEIGHT_MAX);
    if (sp->status < -1 || sp->status > KEEL_REG_CRITICAL)
        return keel_errf(msg, KEEL_EINVAL, "unknown status");
    if (sp->ttl_ms > c->ttl_ms_max || sp->dca_ms > c->ttl_ms_max)
        return keel_errf(msg, KEEL_EINVAL, "ttl or deregister_critical_after over %llu ms",
                         (unsigned long long)c->ttl_ms_max);
    if (sp->success_before_passing > c->threshold_max ||
        sp->failures_before_critical > c->threshold_max)
        return keel_errf(msg, KEEL_EINVAL, "damping counts must be in 0..%u", c->threshold_max);
    return 0;
}

/* Sets the new status (a flip); keeps critical_since for the critical timeout. */
static void set_status(keel_reg_instance_t *in, keel_reg_status_t st, uint64_t now_ms)
{
    if (st == in->status)
        return;
    if (st == KEEL_REG_CRITICAL)
        in->critical_since_ms = now_ms;
    else
        in->critical_since_ms = 0;
    in->status = st;
    in->pending_dir = 0;
    in->pending_count = 0;
}

/* Links a new instance into service s (a new service when s is NULL, at position pos). */
int keel__reg_link_new(keel_reg_t *reg, keel_reg_service_t *s, size_t svc_at,
                       keel_reg_instance_t *in, const keel_reg_spec_t *sp, uint64_t index)
{
    keel_reg_service_t *made = NULL;
    if (s == NULL) {
        if (reg->svc_n == reg->svc_cap) {
            size_t cap = reg->svc_cap ? reg->svc_cap * 2 : 8;
            keel_reg_service_t **a = realloc(reg->svc, cap * sizeof(*a));
            if (a == NULL)
                return KEEL_ENOMEM;
            reg->svc = a;
            reg->svc_cap = cap;
        }
        made = calloc(1, sizeof(*made));
        if (made == NULL || keel__reg_str_set(&made->name, sp->service, sp->service_len) != 0) {
            free(made);
            return KEEL_ENOMEM;
        }
        made->create_index = index;
        s = made;
    }
    int found;
    size_t at = inst_pos(s, in->id.p, in->id.n, &found);
    assert(!found);
    int rc = heap_reserve(reg, reg->instances + 1);
    if (rc == 0 && s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        keel_reg_instance_t **a = realloc(s->inst, cap * sizeof(*a));
        if (a == NULL)
            rc = KEEL_ENOMEM;
        else
            s->inst = a, s->cap = cap;
    }
    if (rc == 0)
        rc = keel_map_put(&reg->by_id, in->id.p, in->id.n, in, NULL);
    if (rc < 0) {
        if (made) {
            keel__reg_str_free(&made->name);
            free(made->inst);
            free(made);
        }
        return rc == KEEL_EFULL ? KEEL_ENOMEM : rc; /* instances_max was checked before */
    }
    if (made) {
        memmove(&reg->svc[svc_at + 1], &reg->svc[svc_at],
                (reg->svc_n - svc_at) * sizeof(*reg->svc));
        reg->svc[svc_at] = made;
        reg->svc_n++;
    }
    memmove(&s->inst[at + 1], &s->inst[at], (s->n - at) * sizeof(*s->inst));
    s->inst[at] = in;
    s->n++;
    in->svc = s;
    reg->instances++;
    touch(reg, s, index);
    return 0;
}

/* Limits a new instance must pass in service name (ignoring one instance leaving it). */
int keel__reg_check_room(const keel_reg_t *reg, const keel_reg_spec_t *sp,
                         const keel_reg_service_t *s, const keel_reg_instance_t *leaving,
                         keel_errmsg_t *msg)
{
    size_t total = reg->instances - (leaving != NULL);
    if (total >= reg->cfg.instances_max)
        return keel_errf(msg, KEEL_EFULL, "the registry holds instances_max %zu instances",
                         reg->cfg.instances_max);
    if (s == NULL && reg->svc_n - (leaving && leaving->svc->n == 1) >= reg->cfg.services_max)
        return keel_errf(msg, KEEL_EFULL, "the registry holds services_max %zu services",
                         reg->cfg.services_max);
    if (s != NULL && s->n - (leaving && leaving->svc == s) >= reg->cfg.instances_per_service_max)
        return keel_errf(msg, KEEL_EFULL,
                         "service '%.*s' holds instances_per_service_max %zu instances",
                         (int)(sp->service_len > 64 ? 64 : sp->service_len),
                         (const char *)sp->service, reg->cfg.instances_per_service_max);
    return 0;
}

/* A live instance registered again in its own service: the definition is replaced, the
 * health kept (unless the spec names a status), the TTL restarted. */
static int redefine(keel_reg_t *reg, keel_reg_instance_t *old, const keel_reg_spec_t *sp,
                    uint64_t now_ms, uint64_t index, keel_errmsg_t *msg)
{
    keel_reg_instance_t *in = keel__reg_inst_new(sp);
    if (in == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    int same = inst_same(old, in) && (sp->status < 0 || (int)old->status == sp->status);
    /* swap the definition into old (old stays linked where it is); in frees the old one */
    keel_reg_instance_t tmp = *old;
    old->address = in->address, old->version = in->version, old->tags = in->tags;
    old->tags_n = in->tags_n, old->meta = in->meta, old->meta_n = in->meta_n;
    old->port = in->port, old->weight_passing = in->weight_passing;
    old->weight_warning = in->weight_warning, old->ttl_ms = in->ttl_ms;
    old->dca_ms = in->dca_ms, old->success_before_passing = in->success_before_passing;
    old->failures_before_critical = in->failures_before_critical;
    in->address = tmp.address, in->version = tmp.version, in->tags = tmp.tags;
    in->tags_n = tmp.tags_n, in->meta = tmp.meta, in->meta_n = tmp.meta_n;
    keel__reg_inst_free(in);
    if (sp->status >= 0 && (int)old->status != sp->status) {
        set_status(old, (keel_reg_status_t)sp->status, now_ms);
        old->flips++;
    }
    old->ttl_deadline_ms = old->ttl_ms ? now_ms + old->ttl_ms : 0;
    keel__reg_inst_deadline(reg, old, 1);
    if (!same) {
        old->modify_index = index;
        touch(reg, old->svc, index);
        keel__reg_hist_record(reg, KEEL_REG_EV_UPDATE, old, index);
    }
    return 0;
}

int keel_reg_register(keel_reg_t *reg, const keel_reg_spec_t *sp, uint64_t now_ms, uint64_t index,
                      keel_errmsg_t *msg)
{
    int rc = keel__reg_check_spec(&reg->cfg, sp, msg);
    if (rc != 0)
        return rc;
    keel_reg_instance_t *old = keel__reg_find_any(reg, sp->id, sp->id_len);
    if (old != NULL && !keel_reg_alive(old, now_ms)) {
        inst_remove(reg, old, KEEL_REG_EV_EXPIRE,
                    index); /* lapsed: as if swept, then registered anew */
        old = NULL;
    }
    int svc_found;
    size_t svc_at = svc_pos(reg, sp->service, sp->service_len, &svc_found);
    keel_reg_service_t *s = svc_found ? reg->svc[svc_at] : NULL;
    if (old != NULL && old->svc == s)
        return redefine(reg, old, sp, now_ms, index, msg);
    rc = keel__reg_check_room(reg, sp, s, old, msg);
    if (rc != 0)
        return rc;
    keel_reg_instance_t *in = keel__reg_inst_new(sp);
    if (in == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    if (old != NULL) { /* another service: the health moves with the id */
        set_status(in, old->status, now_ms);
        in->critical_since_ms = old->critical_since_ms;
        in->flips = old->flips;
        in->create_index = old->create_index;
        keel__reg_str_free(&in->output);
        in->output = old->output;
        old->output = (keel_reg_str_t){0};
        inst_remove(reg, old, KEEL_REG_EV_DEREGISTER, index);
        svc_at = svc_pos(reg, sp->service, sp->service_len, &svc_found);
    } else {
        in->create_index = index;
    }
    if (sp->status >= 0)
        set_status(in, (keel_reg_status_t)sp->status, now_ms);
    in->modify_index = index;
    in->ttl_deadline_ms = in->ttl_ms ? now_ms + in->ttl_ms : 0;
    rc = keel__reg_link_new(reg, s, svc_at, in, sp, index);
    if (rc != 0) {
        keel__reg_inst_free(in);
        return keel_errf(msg, rc, "out of memory");
    }
    keel__reg_inst_deadline(reg, in, 1);
    keel__reg_hist_record(reg, KEEL_REG_EV_REGISTER, in, index);
    return 0;
}

static keel_reg_instance_t *find_live(keel_reg_t *reg, const uint8_t *id, size_t n, uint64_t now_ms)
{
    keel_reg_instance_t *in = keel__reg_find_any(reg, id, n);
    return in && keel_reg_alive(in, now_ms) ? in : NULL;
}

int keel_reg_deregister(keel_reg_t *reg, const uint8_t *id, size_t id_len, uint64_t now_ms,
                        uint64_t index)
{
    keel_reg_instance_t *in = find_live(reg, id, id_len, now_ms);
    if (in == NULL)
        return KEEL_ENOTFOUND;
    inst_remove(reg, in, KEEL_REG_EV_DEREGISTER, index);
    return 0;
}

int keel_reg_heartbeat(keel_reg_t *reg, const uint8_t *id, size_t id_len, uint64_t now_ms)
{
    keel_reg_instance_t *in = find_live(reg, id, id_len, now_ms);
    if (in == NULL)
        return KEEL_ENOTFOUND;
    if (in->ttl_ms) {
        in->ttl_deadline_ms = now_ms + in->ttl_ms;
        keel__reg_inst_deadline(reg, in, 1);
    }
    return 0;
}

/*
 * Flap damping (see registry.h): a report the other way from the status counts toward a
 * change, which happens after failures_before_critical (worse) or success_before_passing
 * (better) consecutive ones, to the status last reported.
 */
static int damp(keel_reg_instance_t *in, keel_reg_status_t st, uint64_t now_ms)
{
    if (st == in->status) {
        in->pending_dir = 0;
        in->pending_count = 0;
        return 0;
    }
    int dir = st > in->status ? 1 : -1;
    if (in->pending_dir != dir) {
        in->pending_dir = dir;
        in->pending_count = 0;
    }
    in->pending_count++;
    uint32_t need = dir > 0 ? in->failures_before_critical : in->success_before_passing;
    if (in->pending_count < need)
        return 0;
    set_status(in, st, now_ms);
    in->flips++;
    return 1;
}

int keel_reg_report(keel_reg_t *reg, const uint8_t *id, size_t id_len, keel_reg_status_t st,
                    const uint8_t *output, size_t output_len, uint64_t now_ms, uint64_t index,
                    keel_reg_status_t *now)
{
    assert(st >= KEEL_REG_PASSING && st <= KEEL_REG_CRITICAL);
    keel_reg_instance_t *in = find_live(reg, id, id_len, now_ms);
    if (in == NULL)
        return KEEL_ENOTFOUND;
    if (output_len > reg->cfg.output_bytes_max)
        output_len = reg->cfg.output_bytes_max;
    if (!str_eq(&in->output, output, output_len)) {
        keel_reg_str_t o;
        if (keel__reg_str_set(&o, output, output_len) != 0)
            return KEEL_ENOMEM;
        keel__reg_str_free(&in->output);
        in->output = o;
    }
    int flipped = damp(in, st, now_ms);
    if (flipped) {
        in->modify_index = index;
        touch(reg, in->svc, index);
    }
    if (in->ttl_ms)
        in->ttl_deadline_ms = now_ms + in->ttl_ms;
    keel__reg_inst_deadline(reg, in, 1);
    if (flipped) /* after the deadline: the copy shows the one in force */
        keel__reg_hist_record(reg, KEEL_REG_EV_STATUS, in, index);
    if (now)
        *now = in->status;
    return 0;
}

size_t keel_reg_sweep(keel_reg_t *reg, uint64_t now_ms, size_t max, uint64_t index)
{
    size_t n = 0;
    while (n < max && reg->heap_n > 0 && reg->heap[0]->deadline_ms <= now_ms) {
        inst_remove(reg, reg->heap[0], KEEL_REG_EV_EXPIRE, index);
        n++;
    }
    return n;
}
