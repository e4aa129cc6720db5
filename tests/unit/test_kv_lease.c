/* test_kv_lease.c - KV state machine: leases with attached keys, locks with fencing tokens. */
#include "base/crc32c.h"
#include "base/rand.h"
#include "test_kv_util.h"

#include <stdio.h>

static kvt_t t;

static void fresh(void)
{
    kvt_free(&t);
    kvt_init(&t, NULL);
}

#define AT(ms, line, want) KT_EQ_STR(kvt_at(&t, ms, line), want)
#define READ(ms, line, want) KT_EQ_STR(kvt_read_at(&t, ms, line), want)

/* ---- leases ---------------------------------------------------------------------- */

static void lease_grant_keepalive_ttl_and_revoke_reply_exactly(void)
{
    fresh();
    AT(1000, "KEEL.LEASE GRANT 5000", ":1\r\n");
    AT(1000, "KEEL.LEASE GRANT 100", ":2\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 0); /* not a key change */
    AT(1000, "KEEL.LEASE TTL 1", ":5000\r\n");
    AT(3000, "KEEL.LEASE TTL 1", ":3000\r\n");
    AT(3000, "KEEL.LEASE KEEPALIVE 1", ":5000\r\n");
    AT(3000, "KEEL.LEASE TTL 1", ":5000\r\n");
    AT(3000, "KEEL.LEASE TTL 2", ":-2\r\n"); /* expired at 1100 */
    AT(3000, "KEEL.LEASE KEEPALIVE 2", "-ERR no such lease\r\n");
    AT(3000, "KEEL.LEASE REVOKE 2", "-ERR no such lease\r\n");
    AT(3000, "KEEL.LEASE TTL 99", ":-2\r\n");
    AT(3000, "KEEL.LEASE KEEPALIVE 99", "-ERR no such lease\r\n");
    AT(3000, "KEEL.LEASE REVOKE 1", ":0\r\n");
    AT(3000, "KEEL.LEASE TTL 1", ":-2\r\n");
    AT(3000, "KEEL.LEASE GRANT 10", ":3\r\n"); /* ids are never reused */
    AT(3000, "KEEL.LEASE GRANT 0", "-ERR value is not an integer or out of range\r\n");
    AT(3000, "KEEL.LEASE GRANT x", "-ERR value is not an integer or out of range\r\n");
    AT(3000, "KEEL.LEASE BOGUS 1", "-ERR unknown subcommand 'BOGUS' for 'keel.lease'\r\n");
    AT(3000, "KEEL.LEASE GRANT", "-ERR wrong number of arguments for 'keel.lease' command\r\n");
    AT(3000, "KEEL.LEASE GRANT 9223372036854775807", "-ERR invalid expire time\r\n");
}

static void leased_keys_vanish_with_their_lease(void)
{
    fresh();
    AT(1000, "KEEL.LEASE GRANT 1000", ":1\r\n");
    AT(1000, "KEEL.LEASE GRANT 9000", ":2\r\n");
    AT(1000, "KEEL.SET a 1 LEASE 1", "+OK\r\n");
    AT(1000, "KEEL.SET b 2 LEASE 1", "+OK\r\n");
    AT(1000, "KEEL.SET c 3 LEASE 2", "+OK\r\n");
    AT(1000, "SET d 4", "+OK\r\n");
    AT(1000, "KEEL.SET d 5 LEASE 99", "-ERR no such lease\r\n");
    AT(1000, "KEEL.SET d 5 LEASE x", "-ERR value is not an integer or out of range\r\n");
    AT(1000, "KEEL.SET d 5 LEASES 1", "-ERR syntax error\r\n");
    READ(1999, "MGET a b c d", "*4\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n$1\r\n4\r\n");
    /* past lease 1's deadline its keys are absent to reads and writes, before any sweep */
    READ(2000, "MGET a b c d", "*4\r\n$-1\r\n$-1\r\n$1\r\n3\r\n$1\r\n4\r\n");
    READ(2000, "EXISTS a b c", ":1\r\n");
    READ(2000, "SCAN 0 COUNT 100 MATCH [ab]", "*2\r\n$1\r\n0\r\n*0\r\n");
    AT(2000, "SET b new NX", "+OK\r\n"); /* b was absent: replaced, no longer leased */
    uint64_t rev = keel_kv_revision(&t.kv);
    AT(2000, "KEEL.LEASE.SWEEP 2000 10", ":1\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 1); /* a went: one change */
    KT_EQ_INT(keel_kv_count(&t.kv), 3);
    READ(2000, "MGET a b c", "*3\r\n$-1\r\n$3\r\nnew\r\n$1\r\n3\r\n");
    /* a write without LEASE detaches a key (as in etcd); KEEL.SET moves it between leases */
    AT(2000, "KEEL.LEASE GRANT 500", ":3\r\n");
    AT(2000, "KEEL.SET x 1 LEASE 2", "+OK\r\n");
    AT(2000, "KEEL.SET x 2 LEASE 3", "+OK\r\n");
    AT(2000, "KEEL.SET y 1 LEASE 3", "+OK\r\n");
    AT(2000, "SET y 2", "+OK\r\n");
    AT(2000, "KEEL.SET z 1 LEASE 3", "+OK\r\n");
    AT(2000, "APPEND z 0123456789012345678901234567890123456789", ":41\r\n"); /* moves z */
    AT(2000, "INCR w", ":1\r\n");
    AT(2000, "KEEL.LEASE REVOKE 2", ":1\r\n"); /* c only: x moved to lease 3 */
    AT(2000, "KEEL.LEASE REVOKE 3", ":2\r\n"); /* x and z; y was detached */
    READ(2000, "MGET c x y z", "*4\r\n$-1\r\n$-1\r\n$1\r\n2\r\n$-1\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 4); /* b d y w */
    /* DEL of a leased key leaves the lease usable */
    AT(2000, "KEEL.LEASE GRANT 500", ":4\r\n");
    AT(2000, "KEEL.SET p 1 LEASE 4", "+OK\r\n");
    AT(2000, "DEL p", ":1\r\n");
    AT(2000, "KEEL.LEASE REVOKE 4", ":0\r\n");
}

static void lease_sweep_ends_due_leases_earliest_first(void)
{
    fresh();
    AT(1000, "KEEL.LEASE GRANT 300", ":1\r\n");
    AT(1000, "KEEL.LEASE GRANT 100", ":2\r\n");
    AT(1000, "KEEL.LEASE GRANT 200", ":3\r\n");
    AT(1000, "KEEL.SET k1 v LEASE 1", "+OK\r\n");
    AT(1000, "KEEL.SET k2 v LEASE 2", "+OK\r\n");
    AT(1000, "KEEL.SET k3 v LEASE 3", "+OK\r\n");
    AT(5000, "KEEL.LEASE.SWEEP 1099 10", ":0\r\n");
    AT(5000, "KEEL.LEASE.SWEEP 5000 1", ":1\r\n");
    READ(0, "EXISTS k2", ":0\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 2);
    AT(5000, "KEEL.LEASE.SWEEP 5000 1", ":1\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 1); /* k3 (lease 3, deadline 1200) before k1 (1300) */
    READ(0, "EXISTS k1", ":0\r\n");     /* k1's lease expired, so absent though stored */
    AT(5000, "KEEL.LEASE.SWEEP 5000 10", ":1\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 0);
    AT(5000, "KEEL.LEASE.SWEEP 5000 10", ":0\r\n");
    /* now_ms beyond the entry's own time is capped by it */
    AT(5000, "KEEL.LEASE GRANT 10", ":4\r\n");
    AT(5005, "KEEL.LEASE.SWEEP 99999 10", ":0\r\n");
    AT(5010, "KEEL.LEASE.SWEEP 99999 10", ":1\r\n");
}

/* ---- locks ------------------------------------------------------------------------- */

static void lock_tokens_strictly_increase_across_holders(void)
{
    fresh();
    AT(1000, "KEEL.LOCK L 100", ":1\r\n");
    AT(1050, "KEEL.LOCK L 100", "$-1\r\n"); /* held */
    AT(1050, "KEEL.LOCK M 100", ":2\r\n");  /* one counter for every lock */
    AT(1100, "KEEL.LOCK L 100", ":3\r\n");  /* expired at 1100: the next holder */
    AT(1100, "KEEL.UNLOCK L 1", ":0\r\n");  /* a stale holder cannot release it */
    AT(1100, "KEEL.UNLOCK L 3", ":1\r\n");
    AT(1100, "KEEL.UNLOCK L 3", ":0\r\n");
    AT(1100, "KEEL.LOCK L 100", ":4\r\n");
    AT(1100, "KEEL.UNLOCK nope 4", ":0\r\n");
    AT(1100, "KEEL.LOCK L 0", "-ERR value is not an integer or out of range\r\n");
    AT(1100, "KEEL.UNLOCK L x", "-ERR value is not an integer or out of range\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 0); /* locks are not key changes */
    /* expired lock records go with the key sweep, and count in the next deadline */
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), 1150);
}

static void fenced_writes_run_only_for_the_current_holder(void)
{
    fresh();
    AT(1000, "KEEL.LOCK L 100", ":1\r\n");
    AT(1000, "KEEL.FENCED L 1 SET k a", "+OK\r\n");
    AT(1000, "KEEL.FENCED L 1 INCR n", ":1\r\n");
    AT(1000, "KEEL.FENCED L 2 SET k b", "-FENCED token 2 is not the holder of the lock\r\n");
    /* holder 1 pauses past its TTL; holder 2 takes the lock */
    AT(1100, "KEEL.LOCK L 100", ":2\r\n");
    AT(1101, "KEEL.FENCED L 1 SET k stale", "-FENCED token 1 is not the holder of the lock\r\n");
    AT(1101, "KEEL.FENCED L 2 SET k b", "+OK\r\n");
    READ(1101, "GET k", "$1\r\nb\r\n");
    /* an expired holder is not the holder even if nobody took the lock */
    AT(1300, "KEEL.FENCED L 2 SET k c", "-FENCED token 2 is not the holder of the lock\r\n");
    AT(1300, "KEEL.FENCED X 2 SET k c", "-FENCED token 2 is not the holder of the lock\r\n");
    READ(1300, "GET k", "$1\r\nb\r\n");
    /* the inner command is checked like any command, before proposing */
    AT(1300, "KEEL.LOCK L 100", ":3\r\n");
    AT(1300, "KEEL.FENCED L 3 SET k", "-ERR wrong number of arguments for 'set' command\r\n");
    AT(1300, "KEEL.FENCED L 3 GET k", "-ERR KEEL.FENCED runs write commands only\r\n");
    AT(1300, "KEEL.FENCED L 3 NOPE k",
       "-ERR unknown command 'NOPE', with args beginning with: 'k' \r\n");
    AT(1300, "KEEL.FENCED L 3 KEEL.FENCED L 3 SET k v",
       "-ERR KEEL.FENCED cannot wrap this command\r\n");
    AT(1300, "KEEL.FENCED L 3 KEEL.EXPIRE.SWEEP 1 1",
       "-ERR KEEL.FENCED cannot wrap this command\r\n");
    /* a fenced transaction: several writes under one check, in one entry; the nesting
     * stops there (KEEL.TXN queues no KEEL.FENCED or KEEL.TXN) */
    AT(1300, "KEEL.FENCED L 3 KEEL.TXN 0 2 3 SET t1 a 3 SET t2 b", "*2\r\n+OK\r\n+OK\r\n");
    READ(1300, "MGET t1 t2", "*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    AT(1300, "KEEL.FENCED L 2 KEEL.TXN 0 1 3 SET t1 z",
       "-FENCED token 2 is not the holder of the lock\r\n");
    AT(1300, "KEEL.FENCED L 3 KEEL.TXN 1 t9 1 1 3 SET t1 z", "*-1\r\n"); /* watch failed */
    READ(1300, "GET t1", "$1\r\na\r\n");
    AT(1300, "KEEL.FENCED L 3 KEEL.TXN 0 1 6 KEEL.FENCED L 3 SET t1 z",
       "-ERR KEEL.TXN cannot queue this command\r\n");
    AT(1300, "KEEL.FENCED L 3 KEEL.TXN 0 1 7 KEEL.TXN 0 1 3 SET t1 z",
       "-ERR KEEL.TXN cannot queue this command\r\n");
    /* the unlock may be the transaction's last write: the check ran first */
    AT(1300, "KEEL.FENCED L 3 KEEL.TXN 0 2 2 DEL t2 3 KEEL.UNLOCK L 3", "*2\r\n:1\r\n:1\r\n");
    AT(1300, "KEEL.FENCED L 3 SET k v", "-FENCED token 3 is not the holder of the lock\r\n");
    AT(1300, "KEEL.LOCK L 100", ":4\r\n");
    AT(1300, "KEEL.FENCED L 4 KEEL.CAS k 0 v", "-CONFLICT expected version 0, current 3\r\n");
    AT(1300, "KEEL.FENCED L 4 KEEL.CAS k 3 v", ":7\r\n"); /* revision 6 was the DEL */
    keel_buf_t err;
    keel_buf_init(&err, 0);
    const uint8_t *argv[KVT_ARGS_MAX];
    size_t lens[KVT_ARGS_MAX];
    int argc = kvt_split("KEEL.FENCED L 4 SET k v BOGUS", argv, lens);
    KT_EQ_INT(keel_kv_check(argc, argv, lens, &err), KEEL_EINVAL);
    KT_EQ_MEM(keel_buf_rptr(&err), "-ERR syntax error\r\n", 19);
    keel_buf_free(&err);
}

static void lockrun_takes_the_lock_and_runs_the_write_in_one_entry(void)
{
    fresh();
    AT(1000, "KEEL.LOCKRUN L 100 SET k a", "*2\r\n:1\r\n+OK\r\n");
    READ(1000, "GET k", "$1\r\na\r\n");
    /* held: nil, and the write does not run */
    AT(1050, "KEEL.LOCKRUN L 100 SET k b", "$-1\r\n");
    AT(1050, "KEEL.LOCK L 100", "$-1\r\n");
    READ(1050, "GET k", "$1\r\na\r\n");
    AT(1050, "KEEL.FENCED L 1 SET k c", "+OK\r\n"); /* the token it handed out holds */
    /* expired: taken again with the next token; a transaction under it, its watch too */
    AT(1200, "KEEL.LOCKRUN L 100 KEEL.TXN 1 log 0 2 4 HSET open s1 t 3 SET log x",
       "*2\r\n:2\r\n*2\r\n:1\r\n+OK\r\n");
    AT(1400, "KEEL.LOCKRUN L 100 KEEL.TXN 1 log 0 1 3 SET log y", "*2\r\n:3\r\n*-1\r\n");
    READ(1400, "GET log", "$1\r\nx\r\n");
    AT(1400, "KEEL.UNLOCK L 3", ":1\r\n");
    /* checked like KEEL.FENCED's write, before anything is taken */
    AT(1400, "KEEL.LOCKRUN L 100 GET k", "-ERR KEEL.LOCKRUN runs write commands only\r\n");
    AT(1400, "KEEL.LOCKRUN L 100 KEEL.FENCED L 1 SET k v",
       "-ERR KEEL.LOCKRUN cannot wrap this command\r\n");
    AT(1400, "KEEL.LOCKRUN L 100 KEEL.TXN 0 1 6 KEEL.LOCKRUN M 100 SET k v",
       "-ERR KEEL.TXN cannot queue this command\r\n");
    AT(1400, "KEEL.LOCKRUN L 0 SET k v", "-ERR value is not an integer or out of range\r\n");
    AT(1400, "KEEL.LOCKRUN L 100 SET k", "-ERR wrong number of arguments for 'set' command\r\n");
    AT(1400, "KEEL.LOCK L 100", ":4\r\n"); /* none of the refused ones took it */
}

/*
 * Many clients contend for one lock with short TTLs and random pauses; each
 * writes its token through KEEL.FENCED. Afterwards, the value written last
 * through the fence is never from a token older than one accepted before:
 * accepted fenced writes carry non-decreasing tokens, and every accepted
 * write came from the holder at that entry's time.
 */
static void contended_fenced_writes_never_accept_a_stale_token(void)
{
    keel_rand_t r;
    uint64_t seed = 0x6c6f636bull;
    KT_SEED(seed);
    keel_rand_seed(&r, seed);
    fresh();
    enum { CLIENTS = 8 };
    uint64_t token[CLIENTS] = {0}, now = 1000, last_accepted = 0, holder = 0, until = 0;
    int accepted = 0, refused = 0;
    char line[128];
    for (int step = 0; step < 20000; step++) {
        now += keel_rand_below(&r, 30);
        int cl = (int)keel_rand_below(&r, CLIENTS);
        if (keel_rand_below(&r, 3) == 0) {
            const char *rep = kvt_at(&t, now, "KEEL.LOCK L 50");
            if (rep[0] == ':') {
                KT_CHECK(now >= until);
                token[cl] = strtoull(rep + 1, NULL, 10);
                KT_CHECK(token[cl] > holder);
                holder = token[cl];
                until = now + 50;
            } else {
                KT_CHECK(now < until);
            }
        } else if (token[cl]) {
            snprintf(line, sizeof(line), "KEEL.FENCED L %llu SET v %llu",
                     (unsigned long long)token[cl], (unsigned long long)token[cl]);
            const char *rep = kvt_at(&t, now, line);
            int ok = strcmp(rep, "+OK\r\n") == 0;
            KT_EQ_INT(ok, token[cl] == holder && now < until);
            if (ok) {
                KT_CHECK(token[cl] >= last_accepted);
                last_accepted = token[cl];
                accepted++;
            } else {
                refused++;
            }
        }
    }
    KT_CHECK(accepted > 100 && refused > 100);
}

/*
 * A random run against a model of leases and attached keys: after every
 * command each key is visible exactly when the model says so (present, and
 * its lease, if any, unexpired), the stored count and the next lease deadline
 * agree, and a second state restored from a snapshot midway replies byte for
 * byte the same to everything after.
 */
enum { MK = 16, ML = 4096 };
typedef struct lmodel {
    uint64_t deadline[ML], ttl[ML]; /* deadline 0: no such lease */
    uint64_t next;
    int present[MK];
    uint64_t lease[MK];
    char val[MK][16];
} lmodel_t;

static int lm_alive(const lmodel_t *m, int k, uint64_t now)
{
    return m->present[k] && (m->lease[k] == 0 || m->deadline[m->lease[k]] > now);
}

static void lm_end(lmodel_t *m, uint64_t id)
{
    m->deadline[id] = 0;
    for (int k = 0; k < MK; k++)
        if (m->present[k] && m->lease[k] == id)
            m->present[k] = 0;
}

/* One random command line for the model at `now`, applying it to the model. */
static void lm_step(lmodel_t *m, keel_rand_t *r, uint64_t now, int step, char *line, size_t cap)
{
    int k = (int)keel_rand_below(r, MK);
    uint64_t id = 1 + keel_rand_below(r, m->next + 1);
    int live = id <= m->next && m->deadline[id] > now;
    switch (keel_rand_below(r, 8)) {
    case 0:
    case 1: {
        uint64_t ttl = 1 + keel_rand_below(r, 300);
        snprintf(line, cap, "KEEL.LEASE GRANT %llu", (unsigned long long)ttl);
        m->next++;
        m->deadline[m->next] = now + ttl;
        m->ttl[m->next] = ttl;
        break;
    }
    case 2:
        snprintf(line, cap, "KEEL.LEASE KEEPALIVE %llu", (unsigned long long)id);
        if (live)
            m->deadline[id] = now + m->ttl[id];
        break;
    case 3:
        snprintf(line, cap, "KEEL.LEASE REVOKE %llu", (unsigned long long)id);
        if (live)
            lm_end(m, id);
        break;
    case 4:
    case 5:
        snprintf(line, cap, "KEEL.SET k%02d v%d LEASE %llu", k, step, (unsigned long long)id);
        if (live) {
            m->present[k] = 1;
            m->lease[k] = id;
            snprintf(m->val[k], sizeof(m->val[k]), "v%d", step);
        }
        break;
    case 6:
        if (keel_rand_below(r, 2)) {
            snprintf(line, cap, "SET k%02d w%d", k, step);
            m->present[k] = 1;
            m->lease[k] = 0;
            snprintf(m->val[k], sizeof(m->val[k]), "w%d", step);
        } else {
            snprintf(line, cap, "DEL k%02d", k);
            m->present[k] = 0;
        }
        break;
    default: {
        int max = (int)keel_rand_below(r, 4);
        snprintf(line, cap, "KEEL.LEASE.SWEEP %llu %d", (unsigned long long)now, max);
        for (int n = 0; n < max; n++) {
            uint64_t best = 0;
            for (uint64_t i = 1; i <= m->next; i++)
                if (m->deadline[i] && m->deadline[i] <= now &&
                    (best == 0 || m->deadline[i] < m->deadline[best]))
                    best = i;
            if (best == 0)
                break;
            lm_end(m, best);
        }
    }
    }
}

static void random_leases_agree_with_a_model_and_survive_snapshots(void)
{
    keel_rand_t r;
    uint64_t seed = 0x6c65617365ull;
    KT_SEED(seed);
    keel_rand_seed(&r, seed);
    static lmodel_t m;
    memset(&m, 0, sizeof(m));
    static kvt_t b;
    fresh();
    kvt_init(&b, NULL);
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    uint64_t now = 1000;
    int restored = 0;
    for (int step = 0; step < 8000 && m.next < ML - 2; step++) {
        now += keel_rand_below(&r, 15);
        char line[96], want[128];
        lm_step(&m, &r, now, step, line, sizeof(line));
        snprintf(want, sizeof(want), "%.127s", kvt_at(&t, now, line));
        if (restored)
            KT_EQ_STR(kvt_at(&b, now, line), want);
        size_t present = 0;
        uint64_t next = KEEL_KV_NO_DEADLINE;
        for (uint64_t i = 1; i <= m.next; i++)
            if (m.deadline[i] && m.deadline[i] < next)
                next = m.deadline[i];
        for (int k = 0; k < MK; k++) {
            char get[16], exp[64];
            snprintf(get, sizeof(get), "GET k%02d", k);
            present += (size_t)m.present[k];
            if (lm_alive(&m, k, now))
                snprintf(exp, sizeof(exp), "$%zu\r\n%s\r\n", strlen(m.val[k]), m.val[k]);
            else
                snprintf(exp, sizeof(exp), "$-1\r\n");
            const char *got = kvt_read_at(&t, now, get);
            if (strcmp(got, exp) != 0)
                KT_FAIL("step %d after %s: %s -> %s, model %s", step, line, get, got, exp);
        }
        KT_EQ_INT(keel_kv_count(&t.kv), present);
        KT_EQ_U64(keel_kv_next_lease_deadline_ms(&t.kv), next);
        if (step == 3000) {
            KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
            keel_errmsg_t em;
            KT_EQ_INT(
                keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &em),
                0);
            b.index = t.index;
            restored = 1;
        }
    }
    KT_CHECK(restored);
    KT_EQ_U64(keel_kv_revision(&b.kv), keel_kv_revision(&t.kv));
    keel_buf_free(&snap);
    kvt_free(&b);
}

/* ---- snapshots ---------------------------------------------------------------------- */

static void leases_and_locks_survive_a_snapshot(void)
{
    fresh();
    AT(1000, "KEEL.LEASE GRANT 1000", ":1\r\n");
    AT(1000, "KEEL.LEASE GRANT 5000", ":2\r\n");
    AT(1000, "KEEL.SET a 1 LEASE 1", "+OK\r\n");
    AT(1000, "KEEL.SET b 2 LEASE 1", "+OK\r\n");
    AT(1000, "KEEL.SET c 3 LEASE 2", "+OK\r\n");
    AT(1000, "KEEL.LOCK L 700", ":1\r\n");
    AT(1000, "KEEL.LOCK M 200", ":2\r\n");
    AT(1000, "SET e 1 PX 300", "+OK\r\n");
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    static kvt_t b;
    kvt_init(&b, NULL);
    keel_errmsg_t m;
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m), 0);
    b.index = t.index;
    KT_EQ_U64(keel_kv_next_deadline_ms(&b.kv), keel_kv_next_deadline_ms(&t.kv));
    const char *next[] = {
        "KEEL.LEASE TTL 1",          "KEEL.LEASE TTL 2",
        "KEEL.LOCK L 100",           "KEEL.LOCK M 100",
        "KEEL.FENCED L 1 SET x 1",   "KEEL.LEASE GRANT 10",
        "KEEL.LEASE REVOKE 1",       "MGET a b c e",
        "KEEL.LEASE.SWEEP 99999 10", "KEEL.EXPIRE.SWEEP 9999 9",
        "KEEL.LOCK M 100",           "KEEL.LEASE KEEPALIVE 2",
    };
    for (size_t i = 0; i < sizeof(next) / sizeof(next[0]); i++) {
        char want[256];
        snprintf(want, sizeof(want), "%.255s", kvt_at(&t, 1200 + 100 * i, next[i]));
        KT_EQ_STR(kvt_at(&b, 1200 + 100 * i, next[i]), want);
    }
    KT_EQ_U64(keel_kv_revision(&b.kv), keel_kv_revision(&t.kv));
    KT_EQ_INT(keel_kv_count(&b.kv), keel_kv_count(&t.kv));
    keel_buf_free(&snap);
    kvt_free(&b);
}

/* Rewrites the u64 at off and reseals the CRC; returns decode's result into a fresh kv. */
static int decode_patched(const keel_buf_t *snap, size_t off, uint64_t v)
{
    static uint8_t buf[1024];
    size_t n = keel_buf_unread(snap);
    if (n > sizeof(buf))
        abort();
    memcpy(buf, keel_buf_rptr(snap), n);
    for (int k = 0; k < 8; k++)
        buf[off + (size_t)k] = (uint8_t)(v >> (8 * k));
    uint32_t crc = keel_crc32c(0, buf, n - 4);
    for (int k = 0; k < 4; k++)
        buf[n - 4 + (size_t)k] = (uint8_t)(crc >> (8 * k));
    static kvt_t b;
    kvt_init(&b, NULL);
    keel_errmsg_t m;
    int rc = keel_kv_snapshot_decode(&b.kv, buf, n, &m);
    if (rc != 0 && (keel_kv_count(&b.kv) != 0 || b.kv.lease_id_last || b.kv.fence_last))
        rc = 999; /* a refused snapshot must leave the target empty */
    kvt_free(&b);
    return rc;
}

static void snapshots_whose_leases_and_locks_contradict_are_refused(void)
{
    fresh();
    AT(1000, "KEEL.LEASE GRANT 1000", ":1\r\n");
    AT(1000, "KEEL.LOCK L 700", ":1\r\n");
    AT(1000, "KEEL.SET a 1 LEASE 1", "+OK\r\n");
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    /* header 40 | lease_id_last 40 | fence_last 48 | lease_count 56 | lease 64 (id, ttl,
     * deadline) | lock_count 88 | lock 96 (u32 len, token, deadline, "L") | key record 117 |
     * typed count (version 4) | section count (version 5) */
    KT_EQ_INT(keel_buf_unread(&snap), 117 + 40 + 2 + 8 + 4 + 4);
    KT_EQ_INT(decode_patched(&snap, 40, 1), 0);                 /* unchanged value: accepted */
    KT_EQ_INT(decode_patched(&snap, 40, 0), KEEL_EPROTO);       /* lease id above lease_id_last */
    KT_EQ_INT(decode_patched(&snap, 48, 0), KEEL_EPROTO);       /* token above fence_last */
    KT_EQ_INT(decode_patched(&snap, 56, 2), KEEL_EPROTO);       /* lease count wrong */
    KT_EQ_INT(decode_patched(&snap, 64, 0), KEEL_EPROTO);       /* lease id 0 */
    KT_EQ_INT(decode_patched(&snap, 72, 0), KEEL_EPROTO);       /* ttl 0 */
    KT_EQ_INT(decode_patched(&snap, 80, 0), KEEL_EPROTO);       /* lease deadline 0 */
    KT_EQ_INT(decode_patched(&snap, 100, 0), KEEL_EPROTO);      /* token 0 */
    KT_EQ_INT(decode_patched(&snap, 108, 0), KEEL_EPROTO);      /* lock deadline 0 */
    KT_EQ_INT(decode_patched(&snap, 117 + 32, 7), KEEL_EPROTO); /* key on a missing lease */
    KT_EQ_INT(decode_patched(&snap, 117 + 32, 0), 0);           /* key with no lease: fine */
    keel_buf_free(&snap);
}

/* FLUSHALL: every key goes (plain, expiring, leased) in one revision, through a table
 * that shrinks under the deletions; leases and locks are not keys and stay. */
static void flushall_deletes_every_key_and_keeps_leases(void)
{
    fresh();
    AT(1000, "KEEL.LEASE GRANT 9000", ":1\r\n");
    AT(1000, "KEEL.SET leased 1 LEASE 1", "+OK\r\n");
    AT(1000, "SET expiring 1 PX 5000", "+OK\r\n");
    for (int i = 0; i < 5000; i++) {
        char line[64];
        snprintf(line, sizeof(line), "SET k%d %d", i, i);
        AT(1000, line, "+OK\r\n");
    }
    KT_EQ_U64(keel_kv_count(&t.kv), 5002);
    uint64_t rev = keel_kv_revision(&t.kv);
    AT(1000, "FLUSHALL BOGUS", "-ERR syntax error\r\n");
    AT(1000, "FLUSHALL", "+OK\r\n");
    KT_EQ_U64(keel_kv_count(&t.kv), 0);
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 1);
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), KEEL_KV_NO_DEADLINE);
    READ(1000, "DBSIZE", ":0\r\n");
    READ(1000, "MGET leased expiring k0 k4999", "*4\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n");
    AT(1000, "KEEL.LEASE TTL 1", ":9000\r\n");
    AT(1000, "KEEL.SET again 2 LEASE 1", "+OK\r\n");
    AT(1000, "FLUSHDB ASYNC", "+OK\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 3); /* the SET, then its deletion */
    AT(1000, "FLUSHALL SYNC", "+OK\r\n");        /* nothing left: no change */
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 3);
    AT(1000, "KEEL.LEASE REVOKE 1", ":0\r\n");
}

int main(void)
{
    kvt_init(&t, NULL);
    KT_RUN(lease_grant_keepalive_ttl_and_revoke_reply_exactly);
    KT_RUN(leased_keys_vanish_with_their_lease);
    KT_RUN(lease_sweep_ends_due_leases_earliest_first);
    KT_RUN(lock_tokens_strictly_increase_across_holders);
    KT_RUN(fenced_writes_run_only_for_the_current_holder);
    KT_RUN(lockrun_takes_the_lock_and_runs_the_write_in_one_entry);
    KT_RUN(contended_fenced_writes_never_accept_a_stale_token);
    KT_RUN(random_leases_agree_with_a_model_and_survive_snapshots);
    KT_RUN(leases_and_locks_survive_a_snapshot);
    KT_RUN(snapshots_whose_leases_and_locks_contradict_are_refused);
    KT_RUN(flushall_deletes_every_key_and_keeps_leases);
    kvt_free(&t);
    return kt_done();
}
