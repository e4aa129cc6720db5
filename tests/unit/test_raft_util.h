/* test_raft_util.h - the harness the Raft core's scenario tests share (test_raft.c,
 * test_raft_conf.c): a tiny synchronous cluster whose messages are traced as text. */
#ifndef KEEL_TEST_RAFT_UTIL_H
#define KEEL_TEST_RAFT_UTIL_H

#include "core/raft/raft.h"
#include "ktest.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/*
 * The harness: up to 5 cores, a FIFO network of deep-copied messages, links that can
 * be cut, and storage that is durable at once unless a node is marked `slow_disk`
 * (then the test says when with cl_persist). Delivered messages are appended to a
 * text trace ("1>2 append t1 i0/0 n1 c0") that scenario tests compare.
 */
#define NODES_MAX 5
#define QUEUE_MAX 4096

typedef struct qmsg {
    keel_raft_msg_t m;
    keel_raft_entry_t *ents;
} qmsg_t;

typedef struct cluster {
    keel_raft_t *r[NODES_MAX + 1];
    int n;
    int cut[NODES_MAX + 1][NODES_MAX + 1];
    int slow_disk[NODES_MAX + 1];
    uint64_t unpersisted_index[NODES_MAX + 1], unpersisted_term[NODES_MAX + 1];
    qmsg_t q[QUEUE_MAX];
    int qn;
    uint64_t applied[NODES_MAX + 1];
    keel_raft_read_state_t reads[64];
    int reads_n;
    char snap[NODES_MAX + 1][64]; /* last snapshot installed from a leader */
    size_t snap_len[NODES_MAX + 1];
    char trace[16384];
    int tracing;
    keel_ms_t now_ms;
} cluster_t;

static inline void tracef(cluster_t *c, const char *fmt, ...)
{
    if (!c->tracing)
        return;
    size_t len = strlen(c->trace);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->trace + len, sizeof(c->trace) - len, fmt, ap);
    va_end(ap);
}

static int g_lease_reads;     /* cfg_for turns lease reads on for the next cluster */
static keel_raft_mem_t g_mem; /* and gives it this log block memory (zero: malloc) */

static inline void cfg_for(keel_raft_config_t *cfg, int n, int id)
{
    keel_raft_config_default(cfg);
    cfg->id = (uint64_t)id;
    cfg->voters_n = (size_t)n;
    for (int i = 0; i < n; i++)
        cfg->voters[i] = (uint64_t)(i + 1);
    cfg->seed = 42;
    cfg->snapshot_chunk_bytes_max = 8;
    cfg->log_trailing_entries = 0;
    cfg->lease_reads = g_lease_reads;
    cfg->mem = g_mem;
}

/* n nodes; the first `voters` bootstrap the cluster, the others wait to join. */
static inline void cl_init_joiners(cluster_t *c, int n, int voters)
{
    memset(c, 0, sizeof(*c));
    c->n = n;
    for (int i = 1; i <= n; i++) {
        keel_raft_config_t cfg;
        cfg_for(&cfg, voters, i);
        if (i > voters)
            cfg.voters_n = 0;
        keel_errmsg_t em;
        KT_EQ_INT(keel_raft_new(&c->r[i], &cfg, NULL, 0, &em), 0);
    }
}

static inline void cl_init(cluster_t *c, int n)
{
    cl_init_joiners(c, n, n);
}

static inline void cl_free(cluster_t *c)
{
    for (int i = 1; i <= c->n; i++)
        keel_raft_free(c->r[i]);
    for (int i = 0; i < c->qn; i++)
        free(c->q[i].ents);
}

static inline void enqueue(cluster_t *c, const keel_raft_msg_t *m)
{
    KT_CHECK(c->qn < QUEUE_MAX);
    qmsg_t *q = &c->q[c->qn++];
    q->m = *m;
    q->ents = NULL;
    if (m->entries_n) {
        /* payloads are not copied: the harness delivers before the sender's next
           advance would matter only in cl_pump, where messages are copied first */
        q->ents = malloc(m->entries_n * sizeof(*q->ents));
        memcpy(q->ents, m->entries, m->entries_n * sizeof(*q->ents));
        for (size_t k = 0; k < m->entries_n; k++) {
            q->ents[k].data = m->entries[k].len ? malloc(m->entries[k].len) : NULL;
            if (m->entries[k].len)
                memcpy(q->ents[k].data, m->entries[k].data, m->entries[k].len);
        }
    }
    q->m.entries = q->ents;
}

static inline void free_qmsg(qmsg_t *q)
{
    for (size_t k = 0; k < q->m.entries_n; k++)
        free(q->ents[k].data);
    free(q->ents);
}

/* Drains every node's ready once. Returns how many nodes had something. */
static inline int cl_ready_all(cluster_t *c)
{
    int busy = 0;
    for (int i = 1; i <= c->n; i++) {
        keel_raft_ready_t rd;
        if (!keel_raft_ready(c->r[i], &rd))
            continue;
        busy++;
        if (rd.snapshot.index) {
            KT_CHECK(rd.snapshot.data_len <= sizeof(c->snap[i]));
            memcpy(c->snap[i], rd.snapshot.data, rd.snapshot.data_len);
            c->snap_len[i] = rd.snapshot.data_len;
            c->applied[i] = rd.snapshot.index;
        }
        for (size_t k = 0; k < rd.msgs_n; k++)
            enqueue(c, &rd.msgs[k]);
        int durable = !c->slow_disk[i];
        if (durable)
            for (size_t k = 0; k < rd.msgs_after_persist_n; k++)
                enqueue(c, &rd.msgs_after_persist[k]);
        else
            KT_CHECK(rd.msgs_after_persist_n == 0 || keel_raft_role(c->r[i]) == KEEL_RAFT_LEADER);
        uint64_t li = 0, lt = 0;
        if (rd.entries_n) {
            li = rd.entries[rd.entries_n - 1].index;
            lt = rd.entries[rd.entries_n - 1].term;
        }
        for (size_t k = 0; k < rd.committed_n; k++) {
            KT_EQ_U64(rd.committed[k].index, c->applied[i] + 1);
            c->applied[i] = rd.committed[k].index;
        }
        for (size_t k = 0; k < rd.reads_n && c->reads_n < 64; k++)
            c->reads[c->reads_n++] = rd.reads[k];
        keel_raft_advance(c->r[i]);
        if (rd.snapshot.index)
            keel_raft_persisted(c->r[i], rd.snapshot.index, rd.snapshot.term);
        if (li && durable)
            keel_raft_persisted(c->r[i], li, lt);
        else if (li) {
            c->unpersisted_index[i] = li;
            c->unpersisted_term[i] = lt;
        }
    }
    return busy;
}

static inline void cl_persist(cluster_t *c, int i)
{
    keel_raft_persisted(c->r[i], c->unpersisted_index[i], c->unpersisted_term[i]);
}

static inline void trace_msg(cluster_t *c, const keel_raft_msg_t *m)
{
    tracef(c, "%llu>%llu %s t%llu", (unsigned long long)m->from, (unsigned long long)m->to,
           keel_raft_msg_type_name(m->type), (unsigned long long)m->term);
    if (m->type == KEEL_RAFT_MSG_APPEND)
        tracef(c, " i%llu/%llu n%zu c%llu", (unsigned long long)m->index,
               (unsigned long long)m->log_term, m->entries_n, (unsigned long long)m->commit);
    if (m->type == KEEL_RAFT_MSG_APPEND_RESP)
        tracef(c, " i%llu", (unsigned long long)m->index);
    if (m->type == KEEL_RAFT_MSG_SNAPSHOT || m->type == KEEL_RAFT_MSG_SNAPSHOT_RESP)
        tracef(c, " i%llu off%llu", (unsigned long long)m->index, (unsigned long long)m->ctx);
    if (m->type == KEEL_RAFT_MSG_SNAPSHOT)
        tracef(c, " len%zu%s", m->data_len, m->last ? " last" : "");
    if (m->reject)
        tracef(c, " reject hint %llu/%llu", (unsigned long long)m->hint_index,
               (unsigned long long)m->hint_term);
    tracef(c, "\n");
}

/* Runs readies and delivers messages until the cluster is quiet. */
static inline void cl_pump(cluster_t *c)
{
    for (int round = 0; round < 1000; round++) {
        int busy = cl_ready_all(c);
        if (c->qn == 0 && busy == 0)
            return;
        qmsg_t batch[QUEUE_MAX];
        int bn = c->qn;
        memcpy(batch, c->q, sizeof(qmsg_t) * (size_t)bn);
        c->qn = 0;
        for (int k = 0; k < bn; k++) {
            keel_raft_msg_t *m = &batch[k].m;
            if (!c->cut[m->from][m->to]) {
                trace_msg(c, m);
                KT_EQ_INT(keel_raft_step(c->r[m->to], m), 0);
            }
            free_qmsg(&batch[k]);
        }
    }
    KT_FAIL("cluster never went quiet");
}

static inline void cl_isolate(cluster_t *c, int i, int on)
{
    for (int j = 1; j <= c->n; j++)
        c->cut[i][j] = c->cut[j][i] = on && i != j;
}

/* Advances node i's clock by `ticks` ticks, pumping after each. */
static inline void cl_tick(cluster_t *c, int i, int ticks)
{
    for (int t = 0; t < ticks; t++) {
        c->now_ms += 10;
        for (int j = 1; j <= c->n; j++)
            if (i == 0 || i == j)
                keel_raft_tick(c->r[j], c->now_ms);
        cl_pump(c);
    }
}

static inline int leader_of(cluster_t *c)
{
    int l = 0;
    for (int i = 1; i <= c->n; i++)
        if (keel_raft_role(c->r[i]) == KEEL_RAFT_LEADER)
            l = i;
    return l;
}

static inline void cl_elect(cluster_t *c, int i)
{
    KT_EQ_INT(keel_raft_campaign(c->r[i]), 0);
    cl_pump(c);
    KT_EQ_INT(keel_raft_role(c->r[i]), KEEL_RAFT_LEADER);
}

#endif
