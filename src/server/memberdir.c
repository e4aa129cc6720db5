/* memberdir.c - the member directory in a configuration's ctx, and one-change-at-a-time edits. */
#include "server/memberdir.h"

#include "base/bytes.h"

#include <assert.h>
#include <string.h>

static int put_str(uint8_t **p, const uint8_t *end, const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n >= cap || n > 255 || (size_t)(end - *p) < 1 + n)
        return KEEL_EINVAL;
    *(*p)++ = (uint8_t)n;
    memcpy(*p, s, n);
    *p += n;
    return 0;
}

int keel_memberdir_encode(const keel_memberdir_t *d, keel_raft_conf_t *conf)
{
    if (d->n > KEEL_RAFT_MEMBERS_MAX)
        return KEEL_EINVAL;
    uint8_t *p = conf->ctx, *end = conf->ctx + KEEL_RAFT_CONF_CTX_BYTES_MAX;
    *p++ = KEEL_MEMBERDIR_VERSION;
    keel_put_u64(p, d->next_id);
    p += 8;
    *p++ = (uint8_t)d->n;
    for (size_t i = 0; i < d->n; i++) {
        const keel_node_member_t *m = &d->m[i];
        if (end - p < 8)
            return KEEL_EINVAL;
        keel_put_u64(p, m->id);
        p += 8;
        if (put_str(&p, end, m->name, sizeof(m->name)) != 0 ||
            put_str(&p, end, m->peer_addr, sizeof(m->peer_addr)) != 0 ||
            put_str(&p, end, m->client_addr, sizeof(m->client_addr)) != 0)
            return KEEL_EINVAL;
    }
    conf->ctx_len = (uint32_t)(p - conf->ctx);
    return 0;
}

static int get_str(keel_rd_t *r, char *out, size_t cap)
{
    uint8_t n = keel_rd_u8(r);
    const uint8_t *s = n ? keel_rd_bytes(r, n) : NULL;
    if (r->bad || n >= cap || (n && memchr(s, '\0', n)))
        return KEEL_EPROTO;
    if (n)
        memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

int keel_memberdir_decode(const keel_raft_conf_t *conf, keel_memberdir_t *d)
{
    keel_rd_t r;
    keel_rd_init(&r, conf->ctx, conf->ctx_len);
    memset(d, 0, sizeof(*d));
    uint8_t version = keel_rd_u8(&r);
    d->next_id = keel_rd_u64(&r);
    uint8_t n = keel_rd_u8(&r);
    if (r.bad || version != KEEL_MEMBERDIR_VERSION || n > KEEL_RAFT_MEMBERS_MAX)
        return KEEL_EPROTO;
    for (size_t i = 0; i < n; i++) {
        keel_node_member_t *m = &d->m[i];
        m->id = keel_rd_u64(&r);
        if (r.bad || m->id == 0 || m->id >= d->next_id ||
            get_str(&r, m->name, sizeof(m->name)) != 0 ||
            get_str(&r, m->peer_addr, sizeof(m->peer_addr)) != 0 ||
            get_str(&r, m->client_addr, sizeof(m->client_addr)) != 0)
            return KEEL_EPROTO;
    }
    d->n = n;
    return r.left == 0 ? 0 : KEEL_EPROTO;
}

keel_node_member_t *keel_memberdir_find_name(keel_memberdir_t *d, const char *name, size_t len)
{
    for (size_t i = 0; i < d->n; i++)
        if (strlen(d->m[i].name) == len && memcmp(d->m[i].name, name, len) == 0)
            return &d->m[i];
    return NULL;
}

keel_node_member_t *keel_memberdir_find_id(keel_memberdir_t *d, uint64_t id)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->m[i].id == id)
            return &d->m[i];
    return NULL;
}

static void add_listed(keel_memberdir_t *out, const keel_memberdir_t *from, uint64_t id, int voter)
{
    keel_node_member_t *m = &out->m[out->n++];
    const keel_node_member_t *f = keel_memberdir_find_id((keel_memberdir_t *)from, id);
    if (f)
        *m = *f;
    else {
        memset(m, 0, sizeof(*m));
        m->id = id;
        strcpy(m->name, "?");
    }
    m->voter = voter;
}

void keel_memberdir_of_conf(const keel_raft_conf_t *c, const keel_node_member_t *boot,
                            size_t boot_n, keel_memberdir_t *out)
{
    keel_memberdir_t all;
    if (c->ctx_len == 0 || keel_memberdir_decode(c, &all) != 0) {
        memset(&all, 0, sizeof(all));
        all.next_id = 1;
        for (size_t i = 0; i < boot_n && i < KEEL_RAFT_MEMBERS_MAX; i++) {
            all.m[all.n++] = boot[i];
            if (boot[i].id >= all.next_id)
                all.next_id = boot[i].id + 1;
        }
    }
    memset(out, 0, sizeof(*out));
    out->next_id = all.next_id;
    for (uint32_t i = 0; i < c->voters_n; i++)
        add_listed(out, &all, c->voters[i], 1);
    for (uint32_t i = 0; i < c->learners_n; i++)
        add_listed(out, &all, c->learners[i], 0);
}

/* Writes the ids of d (by its voter flags) and d itself into next. */
static int conf_from_dir(const keel_memberdir_t *d, keel_raft_conf_t *next, keel_errmsg_t *msg)
{
    next->voters_n = next->learners_n = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (d->m[i].voter)
            next->voters[next->voters_n++] = d->m[i].id;
        else
            next->learners[next->learners_n++] = d->m[i].id;
    }
    if (next->voters_n > KEEL_RAFT_VOTERS_MAX)
        return keel_errf(msg, KEEL_EFULL, "the cluster has %d voters already (the most)",
                         KEEL_RAFT_VOTERS_MAX);
    if (keel_memberdir_encode(d, next) != 0)
        return keel_errf(msg, KEEL_EINVAL, "member directory does not fit");
    return 0;
}

int keel_memberdir_add(const keel_raft_conf_t *cur, const keel_memberdir_t *dir,
                       const keel_node_member_t *who, keel_raft_conf_t *next, uint64_t *id,
                       keel_errmsg_t *msg)
{
    keel_memberdir_t d = *dir;
    size_t nl = strnlen(who->name, sizeof(who->name));
    if (nl == 0 || nl >= sizeof(who->name) || who->peer_addr[0] == '\0' ||
        strnlen(who->peer_addr, sizeof(who->peer_addr)) >= sizeof(who->peer_addr) ||
        strnlen(who->client_addr, sizeof(who->client_addr)) >= sizeof(who->client_addr) ||
        strcmp(who->name, "?") == 0)
        return keel_errf(msg, KEEL_EINVAL, "bad member name or address");
    if (keel_memberdir_find_name(&d, who->name, nl))
        return keel_errf(msg, KEEL_EEXISTS, "a member named '%s' exists already", who->name);
    for (size_t i = 0; i < d.n; i++)
        if (strcmp(d.m[i].peer_addr, who->peer_addr) == 0)
            return keel_errf(msg, KEEL_EEXISTS, "member '%s' has peer address %s already",
                             d.m[i].name, who->peer_addr);
    if (d.n >= KEEL_RAFT_MEMBERS_MAX)
        return keel_errf(msg, KEEL_EFULL, "the cluster has %d members already (the most)",
                         KEEL_RAFT_MEMBERS_MAX);
    keel_node_member_t *m = &d.m[d.n++];
    *m = *who;
    m->id = d.next_id++;
    m->voter = 0;
    *next = *cur;
    int rc = conf_from_dir(&d, next, msg);
    if (rc == 0)
        *id = m->id;
    return rc;
}

int keel_memberdir_remove(const keel_raft_conf_t *cur, const keel_memberdir_t *dir, uint64_t id,
                          keel_raft_conf_t *next, keel_errmsg_t *msg)
{
    keel_memberdir_t d = *dir;
    keel_node_member_t *m = keel_memberdir_find_id(&d, id);
    if (m == NULL)
        return keel_errf(msg, KEEL_ENOTFOUND, "no member with id %llu", (unsigned long long)id);
    size_t voters = 0;
    for (size_t i = 0; i < d.n; i++)
        voters += d.m[i].voter;
    if (m->voter && voters == 1)
        return keel_errf(msg, KEEL_EINVAL, "cannot remove the last voter");
    *m = d.m[--d.n];
    *next = *cur;
    return conf_from_dir(&d, next, msg);
}

int keel_memberdir_set_client(const keel_raft_conf_t *cur, const keel_memberdir_t *dir, uint64_t id,
                              const char *client_addr, keel_raft_conf_t *next, keel_errmsg_t *msg)
{
    keel_memberdir_t d = *dir;
    keel_node_member_t *m = keel_memberdir_find_id(&d, id);
    if (m == NULL)
        return keel_errf(msg, KEEL_ENOTFOUND, "no member with id %llu", (unsigned long long)id);
    if (strnlen(client_addr, sizeof(m->client_addr)) >= sizeof(m->client_addr))
        return keel_errf(msg, KEEL_EINVAL, "client address too long");
    memcpy(m->client_addr, client_addr, strlen(client_addr) + 1);
    *next = *cur;
    return conf_from_dir(&d, next, msg);
}

int keel_memberdir_promote(const keel_raft_conf_t *cur, const keel_memberdir_t *dir, uint64_t id,
                           keel_raft_conf_t *next, keel_errmsg_t *msg)
{
    keel_memberdir_t d = *dir;
    keel_node_member_t *m = keel_memberdir_find_id(&d, id);
    if (m == NULL || m->voter)
        return keel_errf(msg, KEEL_ENOTFOUND, "no learner with id %llu", (unsigned long long)id);
    m->voter = 1;
    *next = *cur;
    return conf_from_dir(&d, next, msg);
}
