/* kv.c - KV state machine: config, hash table with incremental rehash, entry codec, apply. */
#include "core/kv_int.h"

#include "base/hash.h"

#include <stdlib.h>

/* Smallest bucket array; tables never shrink below it. */
#define TABLE_SIZE_MIN 16u
/* Buckets moved per applied entry and per insert while rehashing. */
#define REHASH_STEP_BUCKETS 1u
/* Empty buckets a rehash step may skip per bucket it is asked to move (Redis: 10). */
#define REHASH_EMPTY_VISITS 10u

keel_kv_config_t keel_kv_config_default(void)
{
    return (keel_kv_config_t){
        .key_bytes_max = 64u * 1024u,
        .value_bytes_max = 1024u * 1024u,
        .keys_max = 10u * 1000u * 1000u,
        .argc_max = KEEL_KV_ARGC_MAX,
        .hash_seed = 0x6b65656c6b763031ull, /* "keelkv01" */
        .history_changes_max = 100u * 1000u,
        .history_bytes_max = 64u * 1024u * 1024u,
    };
}

int keel_kv_config_validate(const keel_kv_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->key_bytes_max < 1 || cfg->key_bytes_max > KEEL_KV_KEY_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "key_bytes_max %zu not in 1..%u", cfg->key_bytes_max,
                         KEEL_KV_KEY_BYTES_MAX);
    if (cfg->value_bytes_max > KEEL_KV_VALUE_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "value_bytes_max %zu over %u", cfg->value_bytes_max,
                         KEEL_KV_VALUE_BYTES_MAX);
    /* INCR must be able to store "-9223372036854775808". */
    if (cfg->value_bytes_max < 20)
        return keel_errf(msg, KEEL_EINVAL, "value_bytes_max %zu under 20", cfg->value_bytes_max);
    if (cfg->keys_max < 1 || cfg->keys_max > KEEL_KV_KEYS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "keys_max %zu not in 1..%zu", cfg->keys_max,
                         (size_t)KEEL_KV_KEYS_MAX);
    /* SCAN cursor [MATCH p] [COUNT n] [TYPE t] needs 8. */
    if (cfg->argc_max < 8 || cfg->argc_max > KEEL_KV_ARGC_MAX)
        return keel_errf(msg, KEEL_EINVAL, "argc_max %zu not in 8..%u", cfg->argc_max,
                         KEEL_KV_ARGC_MAX);
    if (cfg->history_changes_max < 1 || cfg->history_changes_max > KEEL_KV_HISTORY_CHANGES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "history_changes_max %zu not in 1..%zu",
                         cfg->history_changes_max, KEEL_KV_HISTORY_CHANGES_MAX);
    if (cfg->history_bytes_max < 1024 || cfg->history_bytes_max > KEEL_KV_HISTORY_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "history_bytes_max %zu not in 1024..%zu",
                         cfg->history_bytes_max, KEEL_KV_HISTORY_BYTES_MAX);
    return 0;
}

int keel_kv_init(keel_kv_t *kv, const keel_kv_config_t *cfg)
{
    memset(kv, 0, sizeof(*kv));
    kv->cfg = cfg ? *cfg : keel_kv_config_default();
    if (keel_kv_config_validate(&kv->cfg, NULL) != 0)
        return KEEL_EINVAL;
    kv->rehash_pos = -1;
    keel__kv_hist_init(kv, 1);
    kv->t[0].buckets = calloc(TABLE_SIZE_MIN, sizeof(*kv->t[0].buckets));
    if (kv->t[0].buckets == NULL)
        return KEEL_ENOMEM;
    kv->t[0].mask = TABLE_SIZE_MIN - 1;
    return 0;
}

static void sub_free(keel_kv_t **sub)
{
    if (*sub == NULL)
        return;
    keel_kv_free(*sub);
    free(*sub);
    *sub = NULL;
}

void keel_kv_free(keel_kv_t *kv)
{
    keel__kv_clear(kv);
    keel__kv_hist_free(kv);
    sub_free(&kv->leases);
    sub_free(&kv->locks);
    keel__kv_reg_free(kv);
    keel__kv_staged_free(kv);
    sub_free(&kv->retained);
    free(kv->t[0].buckets);
    kv->t[0] = (keel__kv_table_t){0};
    free(kv->argv);
    free(kv->lens);
    free(kv->heap);
    kv->heap = NULL;
    kv->heap_cap = 0;
    while (kv->x_spare) {
        keel__kv_xrec_t *r = kv->x_spare;
        kv->x_spare = (keel__kv_xrec_t *)r->e; /* the spare list runs through e */
        free(r);
    }
    kv->x_spare_n = 0;
    kv->argv = NULL;
    kv->lens = NULL;
    kv->argv_cap = 0;
}

uint64_t keel_kv_revision(const keel_kv_t *kv)
{
    return kv->revision;
}

size_t keel_kv_count(const keel_kv_t *kv)
{
    return kv->count;
}

uint64_t keel_kv_applied_index(const keel_kv_t *kv)
{
    return kv->applied_index;
}

/* ---- hash table ------------------------------------------------------------ */

uint64_t keel__kv_hash(const keel_kv_t *kv, const void *key, size_t key_len)
{
    return keel_hash64(key, key_len, kv->cfg.hash_seed);
}

keel__kv_entry_t *keel__kv_find(const keel_kv_t *kv, const void *key, size_t key_len, uint64_t h,
                                keel__kv_entry_t ***link)
{
    for (int i = 0; i < 2; i++) {
        const keel__kv_table_t *t = &kv->t[i];
        if (t->buckets == NULL)
            break;
        size_t b = h & t->mask;
        /* Buckets of the old table below rehash_pos are empty: moved to t[1]. */
        if (i == 0 && kv->rehash_pos >= 0 && b < (size_t)kv->rehash_pos)
            continue;
        for (keel__kv_entry_t **l = &t->buckets[b]; *l != NULL; l = &(*l)->next) {
            keel__kv_entry_t *e = *l;
            if (e->key_len == key_len && memcmp(e->data, key, key_len) == 0) {
                if (link)
                    *link = l;
                return e;
            }
        }
        if (kv->rehash_pos < 0)
            break;
    }
    return NULL;
}

keel__kv_entry_t *keel__kv_entry_init(void *block, size_t key_len, size_t val_cap)
{
    assert(val_cap <= UINT32_MAX && key_len <= UINT32_MAX);
    keel__kv_entry_t *e = block;
    e->next = NULL;
    e->version = e->create_revision = 0;
    e->x = NULL;
    e->type = KEEL__KV_TYPE_STRING;
    e->key_len = (uint32_t)key_len;
    e->val_len = 0;
    e->val_cap = (uint32_t)val_cap;
    return e;
}

keel__kv_entry_t *keel__kv_entry_new(const void *key, size_t key_len, uint64_t h, const void *val,
                                     size_t val_len, size_t val_cap)
{
    assert(val_len <= val_cap);
    (void)h; /* not kept: the table computes it again when it rehashes */
    void *block = malloc(KEEL__KV_ENTRY_HEADER_BYTES + key_len + val_cap);
    if (block == NULL)
        return NULL;
    keel__kv_entry_t *e = keel__kv_entry_init(block, key_len, val_cap);
    e->val_len = (uint32_t)val_len;
    memcpy(e->data, key, key_len);
    if (val_len)
        memcpy(e->data + key_len, val, val_len);
    return e;
}

keel__kv_entry_t *keel__kv_take_adopted(keel_kv_t *kv, const uint8_t *val)
{
    keel__kv_entry_t *e = kv->adopt;
    if (e == NULL || keel__kv_cval(e) != val)
        return NULL;
    kv->adopt = NULL;
    return e;
}

void keel__kv_entry_move(keel_kv_t *kv, keel__kv_entry_t **link, keel__kv_entry_t *n)
{
    keel__kv_entry_t *old = *link;
    assert(n->key_len == old->key_len && n->x == NULL);
    if (old->type != KEEL__KV_TYPE_STRING)
        kv->bytes -= keel__kv_obj_free(old);
    n->next = old->next;
    n->version = old->version;
    n->create_revision = old->create_revision;
    n->x = old->x;
    n->type = KEEL__KV_TYPE_STRING;
    n->val_len = old->val_len; /* what kv->bytes counts until the caller writes the value */
    if (n->x) {
        n->x->e = n;
        if (n->x->expire_ms)
            kv->heap[n->x->heap_pos] = n;
    }
    *link = n;
    free(old);
}

keel__kv_entry_t *keel__kv_entry_new_obj(const void *key, size_t key_len, uint64_t h, int type,
                                         void *obj)
{
    assert(type != KEEL__KV_TYPE_STRING && type < KEEL__KV_TYPES);
    keel__kv_entry_t *e = keel__kv_entry_new(key, key_len, h, &obj, sizeof(obj), sizeof(obj));
    if (e)
        e->type = (uint8_t)type;
    return e;
}

const keel__kv_type_t *keel__kv_type(int type)
{
    assert(type >= 0 && type < KEEL__KV_TYPES);
    static const keel__kv_type_t *const rows[KEEL__KV_TYPES] = {
        [KEEL__KV_TYPE_STREAM] = &keel__kv_type_stream, [KEEL__KV_TYPE_HASH] = &keel__kv_type_hash,
        [KEEL__KV_TYPE_SET] = &keel__kv_type_set,       [KEEL__KV_TYPE_LIST] = &keel__kv_type_list,
        [KEEL__KV_TYPE_ZSET] = &keel__kv_type_zset,
    };
    return rows[type];
}

size_t keel__kv_obj_free(keel__kv_entry_t *e)
{
    if (e->type == KEEL__KV_TYPE_STRING || keel__kv_inline(e))
        return 0; /* its value is the entry's own bytes */
    const keel__kv_type_t *t = keel__kv_type(e->type);
    void *o = keel__kv_obj(e);
    size_t n = t->bytes(o);
    t->free(o);
    return n;
}

static uint64_t rev64(uint64_t v)
{
    v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
    v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
    v = ((v >> 4) & 0x0f0f0f0f0f0f0f0full) | ((v & 0x0f0f0f0f0f0f0f0full) << 4);
    return __builtin_bswap64(v);
}

static size_t pow2_at_least(size_t n)
{
    size_t s = TABLE_SIZE_MIN;
    while (s < n)
        s *= 2;
    return s;
}

/*
 * Starts moving to a table of `size` buckets. A failed allocation is not an
 * error: the table keeps working with longer chains and the next write tries
 * again, so inserts never fail for want of a bigger table.
 */
static void resize_start(keel_kv_t *kv, size_t size)
{
    assert(kv->rehash_pos < 0);
    keel__kv_entry_t **b = calloc(size, sizeof(*b));
    if (b == NULL)
        return;
    kv->t[1] = (keel__kv_table_t){b, size - 1, 0};
    kv->rehash_pos = 0;
}

/*
 * Inserts only grow the table and deletions only shrink it. Shrinking on an insert
 * would undo keel__kv_presize: the first key loaded into a table sized for a whole
 * snapshot would start a shrink to a few buckets, every later key would pile into
 * that small table while the rehash crawls over the big empty one, and loading a
 * snapshot would turn quadratic (measured: 15 s for 550,000 keys).
 */
static void maybe_resize(keel_kv_t *kv, int inserted)
{
    if (kv->rehash_pos >= 0)
        return;
    size_t size = kv->t[0].mask + 1;
    if (inserted && kv->count > size) /* load factor 1, like Redis */
        resize_start(kv, pow2_at_least(kv->count * 2));
    else if (!inserted && size > TABLE_SIZE_MIN && kv->count < size / 8)
        resize_start(kv, pow2_at_least(kv->count * 2));
}

void keel__kv_presize(keel_kv_t *kv, size_t n)
{
    assert(kv->count == 0 && kv->rehash_pos < 0);
    size_t size = pow2_at_least(n);
    if (size <= kv->t[0].mask + 1)
        return;
    keel__kv_entry_t **b = calloc(size, sizeof(*b));
    if (b == NULL)
        return; /* the table grows incrementally instead */
    free(kv->t[0].buckets);
    kv->t[0] = (keel__kv_table_t){b, size - 1, 0};
}

void keel__kv_rehash_step(keel_kv_t *kv, size_t n)
{
    if (kv->rehash_pos < 0)
        return;
    keel__kv_table_t *from = &kv->t[0], *to = &kv->t[1];
    size_t size = from->mask + 1, pos = (size_t)kv->rehash_pos;
    size_t empty_visits = n * REHASH_EMPTY_VISITS;
    while (n > 0 && pos < size) {
        keel__kv_entry_t *e = from->buckets[pos];
        if (e == NULL) {
            pos++;
            if (--empty_visits == 0)
                break;
            continue;
        }
        while (e != NULL) {
            keel__kv_entry_t *next = e->next;
            size_t b = keel__kv_hash(kv, e->data, e->key_len) & to->mask;
            e->next = to->buckets[b];
            to->buckets[b] = e;
            from->used--;
            to->used++;
            e = next;
        }
        from->buckets[pos++] = NULL;
        n--;
    }
    kv->rehash_pos = (int64_t)pos;
    /* The next step reads the next chain's first entry (its hash): start that miss now. */
    if (pos < size && from->buckets[pos] != NULL)
        __builtin_prefetch(from->buckets[pos]);
    if (pos == size) {
        assert(from->used == 0);
        free(from->buckets);
        kv->t[0] = kv->t[1];
        kv->t[1] = (keel__kv_table_t){0};
        kv->rehash_pos = -1;
    }
}

void keel__kv_insert(keel_kv_t *kv, keel__kv_entry_t *e)
{
    assert(kv->t[0].buckets != NULL);
    keel__kv_table_t *t = kv->rehash_pos >= 0 ? &kv->t[1] : &kv->t[0];
    size_t b = keel__kv_hash(kv, e->data, e->key_len) & t->mask;
    e->next = t->buckets[b];
    t->buckets[b] = e;
    t->used++;
    kv->count++;
    kv->bytes += e->key_len + e->val_len;
    if (kv->rehash_pos >= 0)
        keel__kv_rehash_step(kv, REHASH_STEP_BUCKETS);
    maybe_resize(kv, 1);
}

/* The table holding e: while rehashing, t[0] if e is on its t[0] bucket's chain. */
static keel__kv_table_t *table_of(keel_kv_t *kv, const keel__kv_entry_t *e)
{
    keel__kv_table_t *t = &kv->t[0];
    if (kv->rehash_pos < 0)
        return t;
    size_t b = keel__kv_hash(kv, e->data, e->key_len) & t->mask;
    if (b >= (size_t)kv->rehash_pos)
        for (const keel__kv_entry_t *x = t->buckets[b]; x; x = x->next)
            if (x == e)
                return t;
    return &kv->t[1];
}

void keel__kv_unlink(keel_kv_t *kv, keel__kv_entry_t **link)
{
    keel__kv_entry_t *e = *link;
    keel__kv_table_t *t = table_of(kv, e);
    /* Every unlink from the key table is a deletion the command then counts as
     * its change (revision + 1): the one place deletions enter the history. */
    keel__kv_hist_record(kv, kv->revision + 1, KEEL_KV_CHANGE_DEL, e);
    *link = e->next;
    keel__kv_set_expire(kv, e, 0);
    keel__kv_detach(e);
    t->used--;
    kv->count--;
    kv->bytes -= e->key_len + e->val_len + keel__kv_obj_free(e);
    free(e);
    maybe_resize(kv, 0);
}

void keel__kv_replace(keel_kv_t *kv, keel__kv_entry_t **link, keel__kv_entry_t *e)
{
    keel__kv_entry_t *old = *link;
    assert(old->key_len == e->key_len && e->x == NULL);
    keel__kv_set_expire(kv, old, 0);
    keel__kv_detach(old);
    e->next = old->next;
    *link = e;
    kv->bytes = kv->bytes - old->val_len + e->val_len;
    kv->bytes -= keel__kv_obj_free(old);
    free(old);
}

int keel__kv_reserve_value(keel_kv_t *kv, keel__kv_entry_t **link, size_t val_len, int grow)
{
    keel__kv_entry_t *e = *link;
    size_t cap = e->val_cap;
    if (val_len <= cap && (grow || cap <= 2 * val_len + 64))
        return 0;
    size_t ncap = val_len;
    if (grow && val_len < UINT32_MAX / 2)
        ncap = val_len + val_len / 2 + 16;
    assert(ncap <= UINT32_MAX);
    keel__kv_entry_t *n = realloc(e, KEEL__KV_ENTRY_HEADER_BYTES + e->key_len + ncap);
    if (n == NULL) {
        /* Shrinking in place failed: keep the bigger block, it still fits. */
        return val_len <= cap ? 0 : KEEL_ENOMEM;
    }
    n->val_cap = (uint32_t)ncap;
    if (n->x) {
        n->x->e = n;
        if (n->x->expire_ms)
            kv->heap[n->x->heap_pos] = n;
    }
    *link = n;
    return 0;
}

uint64_t keel__kv_scan(const keel_kv_t *kv, uint64_t v,
                       void (*fn)(void *data, const keel__kv_entry_t *e), void *data)
{
    /*
     * Redis dictScan (dict.c): the cursor is a bucket index whose bits are
     * incremented from the high end. Buckets of a table of size 2^k that share
     * the cursor's low k bits are visited before the bucket with the next
     * reversed value, so when the table doubles or halves between calls no
     * bucket's content can be skipped: an entry present for the whole
     * iteration is returned at least once (possibly more than once).
     */
    const keel__kv_table_t *t0 = &kv->t[0], *t1 = &kv->t[1];
    if (kv->rehash_pos < 0) {
        for (const keel__kv_entry_t *e = t0->buckets[v & t0->mask]; e; e = e->next)
            fn(data, e);
        v |= ~(uint64_t)t0->mask;
        v = rev64(rev64(v) + 1);
        return v;
    }
    if (t0->mask > t1->mask) {
        const keel__kv_table_t *x = t0;
        t0 = t1;
        t1 = x;
    }
    uint64_t m0 = t0->mask, m1 = t1->mask;
    for (const keel__kv_entry_t *e = t0->buckets[v & m0]; e; e = e->next)
        fn(data, e);
    do {
        for (const keel__kv_entry_t *e = t1->buckets[v & m1]; e; e = e->next)
            fn(data, e);
        v |= ~m1;
        v = rev64(rev64(v) + 1);
    } while (v & (m0 ^ m1));
    return v;
}

int keel__kv_each(const keel_kv_t *kv, int (*fn)(void *data, const keel__kv_entry_t *e), void *data)
{
    for (int i = 0; i < 2; i++) {
        const keel__kv_table_t *t = &kv->t[i];
        if (t->buckets == NULL)
            continue;
        for (size_t b = 0; b <= t->mask; b++)
            for (const keel__kv_entry_t *e = t->buckets[b]; e; e = e->next) {
                int rc = fn(data, e);
                if (rc != 0)
                    return rc;
            }
    }
    return 0;
}

static void free_chains(keel__kv_table_t *t)
{
    for (size_t b = 0; t->buckets != NULL && b <= t->mask; b++) {
        keel__kv_entry_t *e = t->buckets[b];
        while (e != NULL) {
            keel__kv_entry_t *next = e->next;
            keel__kv_obj_free(e);
            free(e->x); /* every list goes with the table: no unlinking */
            free(e);
            e = next;
        }
        t->buckets[b] = NULL;
    }
    t->used = 0;
}

void keel__kv_clear(keel_kv_t *kv)
{
    free_chains(&kv->t[0]);
    free_chains(&kv->t[1]);
    free(kv->t[1].buckets);
    kv->t[1] = (keel__kv_table_t){0};
    kv->rehash_pos = -1;
    kv->count = 0;
    kv->bytes = 0;
    kv->heap_len = 0;
}

int keel_kv_get(const keel_kv_t *kv, const void *key, size_t key_len, keel_kv_value_t *out)
{
    const keel__kv_entry_t *e =
        keel__kv_find(kv, key, key_len, keel__kv_hash(kv, key, key_len), NULL);
    if (e == NULL)
        return KEEL_ENOTFOUND;
    /* a key of another type (a stream) has no bytes to show here: an empty value */
    size_t n = e->type == KEEL__KV_TYPE_STRING ? e->val_len : 0;
    *out =
        (keel_kv_value_t){keel__kv_cval(e), n, e->version, e->create_revision, keel__kv_expire(e)};
    return 0;
}

/* ---- leases, locks ---------------------------------------------------------------- */

keel__kv_entry_t *keel__kv_lease_find(const keel_kv_t *kv, uint64_t id, keel__kv_entry_t ***link)
{
    if (kv->leases == NULL || id == 0)
        return NULL;
    uint8_t k[KEEL__KV_LEASE_KEY_BYTES];
    keel__kv_put_u64be(k, id);
    return keel__kv_find(kv->leases, k, sizeof(k), keel__kv_hash(kv->leases, k, sizeof(k)), link);
}

int keel__kv_alive(const keel_kv_t *kv, const keel__kv_entry_t *e, uint64_t now_ms)
{
    if (!keel__kv_live(e, now_ms))
        return 0;
    if (keel__kv_lease_id(e) == 0)
        return 1;
    const keel__kv_entry_t *l = keel__kv_lease_find(kv, keel__kv_lease_id(e), NULL);
    assert(l != NULL); /* a key's lease exists until it is revoked, with its keys */
    return keel__kv_live(l, now_ms);
}

int keel__kv_sub(keel_kv_t *kv, keel_kv_t **sub)
{
    if (*sub != NULL)
        return 0;
    keel_kv_t *s = malloc(sizeof(*s));
    if (s == NULL)
        return KEEL_ENOMEM;
    if (keel_kv_init(s, &kv->cfg) != 0) {
        keel_kv_free(s);
        free(s);
        return KEEL_ENOMEM;
    }
    keel__kv_hist_init(s, 0); /* leases and locks are not key changes */
    *sub = s;
    return 0;
}

void keel__kv_clear_all(keel_kv_t *kv)
{
    keel__kv_clear(kv);
    if (kv->leases)
        keel__kv_clear(kv->leases);
    if (kv->locks)
        keel__kv_clear(kv->locks);
    if (kv->retained)
        keel__kv_clear(kv->retained);
}

/* ---- deadline index ---------------------------------------------------------- */

/* Total order: (deadline, key bytes, key length). */
static int heap_less(const keel__kv_entry_t *a, const keel__kv_entry_t *b)
{
    uint64_t ta = a->x->expire_ms, tb = b->x->expire_ms;
    if (ta != tb)
        return ta < tb;
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(keel__kv_key(a), keel__kv_key(b), n);
    return c != 0 ? c < 0 : a->key_len < b->key_len;
}

static void heap_place(keel_kv_t *kv, size_t i, keel__kv_entry_t *e)
{
    kv->heap[i] = e;
    e->x->heap_pos = (uint32_t)i;
}

/* Moves the entry at i up or down to its place. */
static void heap_fix(keel_kv_t *kv, size_t i)
{
    keel__kv_entry_t *e = kv->heap[i];
    while (i > 0 && heap_less(e, kv->heap[(i - 1) / 2])) {
        heap_place(kv, i, kv->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        keel__kv_entry_t *best = e;
        if (l < kv->heap_len && heap_less(kv->heap[l], best))
            m = l, best = kv->heap[l];
        if (l + 1 < kv->heap_len && heap_less(kv->heap[l + 1], best))
            m = l + 1, best = kv->heap[l + 1];
        if (m == i)
            break;
        heap_place(kv, i, best);
        i = m;
    }
    heap_place(kv, i, e);
}

int keel__kv_heap_reserve(keel_kv_t *kv, size_t n)
{
    /* the records for entries that have none yet: spares, reused by later reserves */
    while (kv->x_spare_n < n) {
        keel__kv_xrec_t *r = keel__kv_xrec_new();
        if (r == NULL)
            return KEEL_ENOMEM;
        r->e = (keel__kv_entry_t *)(void *)kv->x_spare; /* the spare list runs through e */
        kv->x_spare = r;
        kv->x_spare_n++;
    }
    if (kv->heap_cap - kv->heap_len >= n)
        return 0;
    size_t cap = kv->heap_cap ? kv->heap_cap : 16;
    while (cap - kv->heap_len < n)
        cap *= 2;
    keel__kv_entry_t **h = realloc(kv->heap, cap * sizeof(*h));
    if (h == NULL)
        return KEEL_ENOMEM;
    kv->heap = h;
    kv->heap_cap = cap;
    return 0;
}

void keel__kv_set_expire(keel_kv_t *kv, keel__kv_entry_t *e, uint64_t ms)
{
    uint64_t cur = keel__kv_expire(e);
    if (cur == 0 && ms == 0)
        return;
    if (cur == 0) {
        assert(kv->heap_len < kv->heap_cap);
        if (e->x == NULL) {
            keel__kv_xrec_t *r = kv->x_spare;
            assert(r != NULL); /* reserved with the heap slot */
            kv->x_spare = (keel__kv_xrec_t *)(void *)r->e;
            kv->x_spare_n--;
            r->e = e;
            e->x = r;
        }
        e->x->expire_ms = ms;
        heap_place(kv, kv->heap_len++, e);
        heap_fix(kv, kv->heap_len - 1);
        return;
    }
    size_t i = e->x->heap_pos;
    assert(i < kv->heap_len && kv->heap[i] == e);
    e->x->expire_ms = ms;
    if (ms != 0) {
        heap_fix(kv, i);
        return;
    }
    keel__kv_entry_t *last = kv->heap[--kv->heap_len];
    if (last != e) {
        heap_place(kv, i, last);
        heap_fix(kv, i);
    }
    keel__kv_x_release(e);
}

keel__kv_entry_t *keel__kv_heap_top(const keel_kv_t *kv)
{
    return kv->heap_len ? kv->heap[0] : NULL;
}

static uint64_t top_deadline(const keel_kv_t *kv)
{
    return kv && kv->heap_len ? kv->heap[0]->x->expire_ms : KEEL_KV_NO_DEADLINE;
}

uint64_t keel_kv_next_deadline_ms(const keel_kv_t *kv)
{
    uint64_t keys = top_deadline(kv), locks = top_deadline(kv->locks);
    uint64_t next = keys < locks ? keys : locks, staged = keel__kv_staged_next_deadline(kv);
    return staged < next ? staged : next;
}

uint64_t keel_kv_next_lease_deadline_ms(const keel_kv_t *kv)
{
    return top_deadline(kv->leases);
}

/* ---- command entries --------------------------------------------------------- */

int keel_kv_entry_encode(keel_buf_t *out, uint64_t time_ms, int argc, const uint8_t *const *argv,
                         const size_t *lens)
{
    if (argc < 1 || (size_t)argc > KEEL_KV_ARGC_MAX)
        return KEEL_EINVAL;
    size_t total = KEEL_KV_ENTRY_HEADER_BYTES;
    for (int i = 0; i < argc; i++) {
        if (lens[i] > KEEL_KV_VALUE_BYTES_MAX)
            return KEEL_EINVAL;
        total += 4 + lens[i]; /* cannot overflow: 2^20 x (4 + 2^29) < 2^50 */
    }
    int rc = keel_buf_reserve(out, total);
    if (rc != 0)
        return rc;
    uint8_t *w = keel_buf_wptr(out);
    w[0] = KEEL_KV_ENTRY_VERSION;
    keel_put_u64(w + 1, time_ms);
    keel_put_u32(w + 9, (uint32_t)argc);
    w += KEEL_KV_ENTRY_HEADER_BYTES;
    for (int i = 0; i < argc; i++) {
        keel_put_u32(w, (uint32_t)lens[i]);
        if (lens[i])
            memcpy(w + 4, argv[i], lens[i]);
        w += 4 + lens[i];
    }
    assert((size_t)(w - keel_buf_wptr(out)) == total);
    keel_buf_commit(out, total);
    return 0;
}

int keel_kv_entry_decode(const uint8_t *entry, size_t len, uint64_t *time_ms, size_t argv_cap,
                         const uint8_t **argv, size_t *lens, size_t *argc)
{
    if (len < KEEL_KV_ENTRY_HEADER_BYTES || entry[0] != KEEL_KV_ENTRY_VERSION)
        return KEEL_EPROTO;
    uint32_t n = keel_get_u32(entry + 9);
    if (n < 1 || n > KEEL_KV_ARGC_MAX)
        return KEEL_EPROTO;
    /* Walk every length first: the entry is valid or nothing is filled. */
    size_t pos = KEEL_KV_ENTRY_HEADER_BYTES;
    for (uint32_t i = 0; i < n; i++) {
        if (len - pos < 4)
            return KEEL_EPROTO;
        uint32_t l = keel_get_u32(entry + pos);
        pos += 4;
        if (l > len - pos)
            return KEEL_EPROTO;
        pos += l;
    }
    if (pos != len)
        return KEEL_EPROTO;
    *time_ms = keel_get_u64(entry + 1);
    *argc = n;
    if (n > argv_cap)
        return KEEL_ETOOBIG;
    pos = KEEL_KV_ENTRY_HEADER_BYTES;
    for (uint32_t i = 0; i < n; i++) {
        lens[i] = keel_get_u32(entry + pos);
        argv[i] = entry + pos + 4;
        pos += 4 + lens[i];
    }
    assert(pos == len);
    return 0;
}

int keel_kv_entry_is_read(const uint8_t *entry, size_t len)
{
    size_t pos = KEEL_KV_ENTRY_HEADER_BYTES;
    if (len < pos + 4 || entry[0] != KEEL_KV_ENTRY_VERSION || keel_get_u32(entry + 9) < 1)
        return 0;
    size_t name_len = keel_get_u32(entry + pos);
    if (name_len > len - pos - 4)
        return 0;
    return keel_kv_command_flags(entry + pos + 4, name_len) == KEEL_KV_READ;
}

/* Appends one argument (u32 len | bytes) at *w. */
static uint8_t *put_arg(uint8_t *w, const void *p, size_t n)
{
    keel_put_u32(w, (uint32_t)n);
    if (n)
        memcpy(w + 4, p, n);
    return w + 4 + n;
}

static uint8_t *put_num(uint8_t *w, uint64_t v)
{
    char d[20];
    size_t n = 0;
    do {
        d[19 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put_arg(w, d + 20 - n, n);
}

int keel_kv_txn_encode(keel_buf_t *out, uint64_t time_ms, size_t nwatch,
                       const uint8_t *const *wkeys, const size_t *wlens, const uint64_t *wversions,
                       size_t ncmds, const keel_kv_txn_cmd_t *cmds)
{
    /* 24 bytes bound a u32 length and up to 20 digits */
    size_t argc = 3 + 2 * nwatch + ncmds, total = KEEL_KV_ENTRY_HEADER_BYTES + 3 * 24;
    if (nwatch > KEEL_KV_ARGC_MAX || ncmds > KEEL_KV_ARGC_MAX)
        return KEEL_EINVAL;
    for (size_t i = 0; i < nwatch; i++) {
        if (wlens[i] > KEEL_KV_VALUE_BYTES_MAX || wversions[i] > INT64_MAX)
            return KEEL_EINVAL;
        total += 4 + wlens[i] + 24;
    }
    for (size_t k = 0; k < ncmds; k++) {
        if (cmds[k].argc < 1 || (size_t)cmds[k].argc > KEEL_KV_ARGC_MAX)
            return KEEL_EINVAL;
        argc += (size_t)cmds[k].argc;
        total += 24;
        for (int i = 0; i < cmds[k].argc; i++) {
            if (cmds[k].lens[i] > KEEL_KV_VALUE_BYTES_MAX)
                return KEEL_EINVAL;
            total += 4 + cmds[k].lens[i];
        }
    }
    if (argc > KEEL_KV_ARGC_MAX)
        return KEEL_EINVAL;
    int rc = keel_buf_reserve(out, total);
    if (rc != 0)
        return rc;
    uint8_t *start = keel_buf_wptr(out), *w = start + KEEL_KV_ENTRY_HEADER_BYTES;
    start[0] = KEEL_KV_ENTRY_VERSION;
    keel_put_u64(start + 1, time_ms);
    keel_put_u32(start + 9, (uint32_t)argc);
    w = put_arg(w, "KEEL.TXN", 8);
    w = put_num(w, nwatch);
    for (size_t i = 0; i < nwatch; i++) {
        w = put_arg(w, wkeys[i], wlens[i]);
        w = put_num(w, wversions[i]);
    }
    w = put_num(w, ncmds);
    for (size_t k = 0; k < ncmds; k++) {
        w = put_num(w, (uint64_t)cmds[k].argc);
        for (int i = 0; i < cmds[k].argc; i++)
            w = put_arg(w, cmds[k].argv[i], cmds[k].lens[i]);
    }
    assert((size_t)(w - start) <= total);
    keel_buf_commit(out, (size_t)(w - start));
    return 0;
}

uint64_t keel_kv_version_at(const keel_kv_t *kv, uint64_t now_ms, const void *key, size_t key_len)
{
    const keel__kv_entry_t *e =
        keel__kv_find(kv, key, key_len, keel__kv_hash(kv, key, key_len), NULL);
    if (now_ms < kv->time_ms)
        now_ms = kv->time_ms;
    return e && keel__kv_alive(kv, e, now_ms) ? e->version : 0;
}

static int grow_argv(keel_kv_t *kv, size_t argc)
{
    assert(argc <= KEEL_KV_ARGC_MAX);
    size_t cap = kv->argv_cap ? kv->argv_cap : 16;
    while (cap < argc)
        cap *= 2;
    const uint8_t **a = realloc(kv->argv, cap * sizeof(*a));
    if (a == NULL)
        return KEEL_ENOMEM;
    kv->argv = a;
    size_t *l = realloc(kv->lens, cap * sizeof(*l));
    if (l == NULL)
        return KEEL_ENOMEM;
    kv->lens = l;
    kv->argv_cap = cap;
    return 0;
}

void keel_kv_prefetch(const keel_kv_t *kv, const uint8_t *entry, size_t len, int stage)
{
    /* argv[1], the first key of every keyed command: after the header and argv[0] */
    size_t pos = KEEL_KV_ENTRY_HEADER_BYTES;
    if (len < pos + 4 || entry[0] != KEEL_KV_ENTRY_VERSION || keel_get_u32(entry + 9) < 2)
        return;
    size_t name_len = keel_get_u32(entry + pos);
    if (name_len > len - pos - 4 || len - pos - 4 - name_len < 4)
        return;
    pos += 4 + name_len;
    size_t key_len = keel_get_u32(entry + pos);
    if (key_len > len - pos - 4)
        return;
    uint64_t h = keel__kv_hash(kv, entry + pos + 4, key_len);
    for (int i = 0; i < 2; i++) {
        const keel__kv_table_t *t = &kv->t[i];
        if (t->buckets == NULL)
            break;
        keel__kv_entry_t *const *slot = &t->buckets[h & t->mask];
        if (stage == 0) {
            __builtin_prefetch(slot);
        } else if (*slot != NULL) {
            /* the header, and the key bytes that follow it on the next line */
            __builtin_prefetch(*slot);
            __builtin_prefetch((const uint8_t *)*slot + 64);
        }
        if (kv->rehash_pos < 0)
            break;
    }
}

/* Decodes an entry's argv into kv's scratch (kv->argv, kv->lens), growing it if needed. */
static int decode_entry(keel_kv_t *kv, const uint8_t *entry, size_t len, uint64_t *time_ms,
                        size_t *argc)
{
    int rc = keel_kv_entry_decode(entry, len, time_ms, kv->argv_cap, kv->argv, kv->lens, argc);
    if (rc == KEEL_ETOOBIG) {
        rc = grow_argv(kv, *argc);
        if (rc != 0)
            return rc;
        rc = keel_kv_entry_decode(entry, len, time_ms, kv->argv_cap, kv->argv, kv->lens, argc);
        assert(rc != KEEL_ETOOBIG);
    }
    return rc;
}

int keel_kv_read_entry(keel_kv_t *kv, uint64_t now_ms, const uint8_t *entry, size_t len,
                       keel_buf_t *reply)
{
    uint64_t time_ms;
    size_t argc;
    int rc = decode_entry(kv, entry, len, &time_ms, &argc);
    return rc == 0 ? keel_kv_read_at(kv, now_ms, (int)argc, kv->argv, kv->lens, reply) : rc;
}

int keel_kv_apply(keel_kv_t *kv, uint64_t index, const uint8_t *entry, size_t len,
                  keel_buf_t *reply)
{
    assert(index > kv->applied_index);
    uint64_t time_ms;
    size_t argc;
    int rc = decode_entry(kv, entry, len, &time_ms, &argc);
    if (rc != 0)
        return rc;
    keel__kv_rehash_step(kv, REHASH_STEP_BUCKETS);
    size_t mark = keel_buf_unread(reply);
    /* The state's clock never runs backwards (a new leader's clock may be
     * behind its predecessor's), so an expired key stays expired. */
    uint64_t now_ms = time_ms > kv->time_ms ? time_ms : kv->time_ms;
    rc = keel__kv_exec(kv, kv, now_ms, argc, kv->argv, kv->lens, reply);
    if (rc != 0) {
        reply->len = reply->rpos + mark;
        return rc;
    }
    kv->applied_index = index;
    if (time_ms > kv->time_ms)
        kv->time_ms = time_ms;
    return 0;
}

void keel_kv_advance(keel_kv_t *kv, uint64_t index)
{
    assert(index > kv->applied_index);
    kv->applied_index = index;
}

int keel_kv_read(const keel_kv_t *kv, int argc, const uint8_t *const *argv, const size_t *lens,
                 keel_buf_t *reply)
{
    return keel_kv_read_at(kv, kv->time_ms, argc, argv, lens, reply);
}

int keel_kv_read_at(const keel_kv_t *kv, uint64_t now_ms, int argc, const uint8_t *const *argv,
                    const size_t *lens, keel_buf_t *reply)
{
    assert(argc >= 1);
    if (keel_kv_command_flags(argv[0], lens[0]) == KEEL_KV_WRITE)
        return KEEL_EINVAL;
    size_t mark = keel_buf_unread(reply);
    /* Never before the state's clock: a key some applied entry already saw as
     * expired must not reappear to a reader whose clock is behind. */
    if (now_ms < kv->time_ms)
        now_ms = kv->time_ms;
    int rc = keel__kv_exec(NULL, kv, now_ms, (size_t)argc, argv, lens, reply);
    if (rc != 0)
        reply->len = reply->rpos + mark;
    return rc;
}
