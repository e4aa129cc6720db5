/* test_kv_txn.c - KV state machine: KEEL.TXN (WATCH/MULTI/EXEC as one entry) and its builder. */
#include "test_kv_util.h"

#include <stdio.h>
#include <time.h>

static kvt_t t;

static void fresh(void)
{
    kvt_free(&t);
    kvt_init(&t, NULL);
}

/* Up to 4 queued command lines and up to 4 watched keys, built with keel_kv_txn_encode. */
typedef struct txn_spec {
    const char *watch[4];
    uint64_t versions[4];
    const char *cmds[4];
} txn_spec_t;

static const char *run_txn(uint64_t time_ms, const txn_spec_t *s)
{
    static const uint8_t *argvs[4][KVT_ARGS_MAX];
    static size_t lenss[4][KVT_ARGS_MAX];
    static char lines[4][256];
    keel_kv_txn_cmd_t cmds[4];
    const uint8_t *wkeys[4];
    size_t wlens[4], nwatch = 0, ncmds = 0;
    for (; nwatch < 4 && s->watch[nwatch]; nwatch++) {
        wkeys[nwatch] = (const uint8_t *)s->watch[nwatch];
        wlens[nwatch] = strlen(s->watch[nwatch]);
    }
    for (; ncmds < 4 && s->cmds[ncmds]; ncmds++) {
        snprintf(lines[ncmds], sizeof(lines[ncmds]), "%s", s->cmds[ncmds]);
        cmds[ncmds].argc = kvt_split(lines[ncmds], argvs[ncmds], lenss[ncmds]);
        cmds[ncmds].argv = argvs[ncmds];
        cmds[ncmds].lens = lenss[ncmds];
    }
    keel_buf_reset(&t.entry);
    keel_buf_reset(&t.reply);
    if (keel_kv_txn_encode(&t.entry, time_ms, nwatch, wkeys, wlens, s->versions, ncmds, cmds) != 0)
        return "(encode failed)";
    /* what the server does first: keel_kv_check on the decoded argv */
    const uint8_t *argv[256];
    size_t lens[256], argc = 0;
    uint64_t tm = 0;
    if (keel_kv_entry_decode(keel_buf_rptr(&t.entry), keel_buf_unread(&t.entry), &tm, 256, argv,
                             lens, &argc) != 0 ||
        tm != time_ms)
        return "(decode failed)";
    if (keel_kv_check((int)argc, argv, lens, &t.reply) != 0) {
        memcpy(t.text, keel_buf_rptr(&t.reply), keel_buf_unread(&t.reply));
        t.text[keel_buf_unread(&t.reply)] = '\0';
        return t.text;
    }
    int rc = keel_kv_apply(&t.kv, ++t.index, keel_buf_rptr(&t.entry), keel_buf_unread(&t.entry),
                           &t.reply);
    if (rc != 0)
        return "(apply failed)";
    memcpy(t.text, keel_buf_rptr(&t.reply), keel_buf_unread(&t.reply));
    t.text[keel_buf_unread(&t.reply)] = '\0';
    return t.text;
}

static const char *at(uint64_t time_ms, const char *line)
{
    const uint8_t *argv[KVT_ARGS_MAX];
    size_t lens[KVT_ARGS_MAX];
    int argc = kvt_split(line, argv, lens);
    keel_buf_reset(&t.entry);
    keel_buf_reset(&t.reply);
    if (keel_kv_entry_encode(&t.entry, time_ms, argc, argv, lens) != 0)
        abort();
    if (keel_kv_apply(&t.kv, ++t.index, keel_buf_rptr(&t.entry), keel_buf_unread(&t.entry),
                      &t.reply) != 0)
        return "(apply failed)";
    memcpy(t.text, keel_buf_rptr(&t.reply), keel_buf_unread(&t.reply));
    t.text[keel_buf_unread(&t.reply)] = '\0';
    return t.text;
}

static uint64_t ver(uint64_t now_ms, const char *key)
{
    return keel_kv_version_at(&t.kv, now_ms, key, strlen(key));
}

static void exec_runs_every_command_when_no_watched_key_changed(void)
{
    fresh();
    KT_EQ_STR(at(1000, "SET a 1"), "+OK\r\n");
    txn_spec_t s = {{"a", "b"}, {ver(1000, "a"), ver(1000, "b")}, {"INCR a", "SET b x", "GET b"}};
    KT_EQ_U64(s.versions[0], 1);
    KT_EQ_U64(s.versions[1], 0);
    KT_EQ_STR(run_txn(1000, &s), "*3\r\n:2\r\n+OK\r\n$1\r\nx\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 3); /* each queued write is its own change */
    /* an empty transaction, with or without watches */
    txn_spec_t e = {{NULL}, {0}, {NULL}};
    KT_EQ_STR(run_txn(1000, &e), "*0\r\n");
}

static void exec_returns_nil_and_runs_nothing_when_a_watched_key_changed(void)
{
    fresh();
    KT_EQ_STR(at(1000, "SET a 1"), "+OK\r\n");
    uint64_t va = ver(1000, "a"), vb = ver(1000, "b");
    KT_EQ_STR(at(1000, "SET a 1"), "+OK\r\n"); /* same value: still a change (as in Redis) */
    txn_spec_t s = {{"b", "a"}, {vb, va}, {"SET c 1", "DEL a"}};
    uint64_t rev = keel_kv_revision(&t.kv);
    KT_EQ_STR(run_txn(1000, &s), "*-1\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), rev);
    KT_EQ_INT(keel_kv_count(&t.kv), 1);
    /* a watched key that did not exist and was created meanwhile */
    KT_EQ_STR(at(1000, "SET b 1"), "+OK\r\n");
    s.versions[1] = ver(1000, "a");
    KT_EQ_STR(run_txn(1000, &s), "*-1\r\n");
    /* a watched key that expired meanwhile counts as changed */
    KT_EQ_STR(at(1000, "SET e 1 PX 10"), "+OK\r\n");
    txn_spec_t x = {{"e"}, {ver(1000, "e")}, {"SET c 2"}};
    KT_EQ_STR(run_txn(1010, &x), "*-1\r\n");
    x.versions[0] = ver(1010, "e");
    KT_EQ_U64(x.versions[0], 0);
    KT_EQ_STR(run_txn(1010, &x), "*1\r\n+OK\r\n");
}

static void run_time_errors_stay_inside_the_reply_array(void)
{
    fresh();
    KT_EQ_STR(at(1000, "SET s text"), "+OK\r\n");
    txn_spec_t s = {{NULL}, {0}, {"INCR s", "SET t 1", "KEEL.CAS t 9 v", "INCR t"}};
    KT_EQ_STR(run_txn(1000, &s), "*4\r\n-ERR value is not an integer or out of range\r\n+OK\r\n"
                                 "-CONFLICT expected version 9, current 2\r\n:2\r\n");
}

static void a_syntax_error_is_its_commands_reply_inside_the_array(void)
{
    /* as Redis 7.0's EXEC: queued with a syntax error, answered with it, the others run */
    fresh();
    txn_spec_t s = {{NULL}, {0}, {"SET k v XX NX", "SET k v", "INCRBY k x"}};
    KT_EQ_STR(run_txn(1000, &s), "*3\r\n-ERR syntax error\r\n+OK\r\n"
                                 "-ERR value is not an integer or out of range\r\n");
    KT_EQ_STR(at(1000, "GET k"), "$1\r\nv\r\n");
}

static void unknown_commands_and_wrong_arity_are_refused_before_proposing(void)
{
    fresh();
    struct {
        txn_spec_t s;
        const char *err;
    } cases[] = {
        {{{NULL}, {0}, {"SET k"}}, "-ERR wrong number of arguments for 'set' command\r\n"},
        {{{NULL}, {0}, {"SET k v", "NOPE"}},
         "-ERR unknown command 'NOPE', with args beginning with: \r\n"},
        {{{NULL}, {0}, {"KEEL.EXPIRE.SWEEP 1 1"}}, "-ERR KEEL.TXN cannot queue this command\r\n"},
        {{{NULL}, {0}, {"KEEL.FENCED L 1 SET k v"}}, "-ERR KEEL.TXN cannot queue this command\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        KT_EQ_STR(run_txn(1000, &cases[i].s), cases[i].err);
    KT_EQ_U64(t.index, 0); /* nothing was applied */
    /* hand-made layouts that do not add up */
    const char *bad[][2] = {
        {"KEEL.TXN x 0", "-ERR KEEL.TXN: bad watch count\r\n"},
        {"KEEL.TXN 2 k 1", "-ERR KEEL.TXN: bad watch count\r\n"},
        {"KEEL.TXN 1 k -1 0", "-ERR KEEL.TXN: bad watched version\r\n"},
        {"KEEL.TXN 0 1", "-ERR KEEL.TXN: bad command length\r\n"},
        {"KEEL.TXN 0 1 0 GET", "-ERR KEEL.TXN: bad command length\r\n"},
        {"KEEL.TXN 0 1 3 GET k", "-ERR KEEL.TXN: bad command length\r\n"},
        {"KEEL.TXN 0 0 extra", "-ERR KEEL.TXN: arguments after the last command\r\n"},
        {"KEEL.TXN 0 x", "-ERR KEEL.TXN: bad command count\r\n"},
        {"KEEL.TXN 0 1 2 GET k", NULL},
    };
    keel_buf_t err;
    keel_buf_init(&err, 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const uint8_t *argv[KVT_ARGS_MAX];
        size_t lens[KVT_ARGS_MAX];
        int argc = kvt_split(bad[i][0], argv, lens);
        keel_buf_reset(&err);
        int rc = keel_kv_check(argc, argv, lens, &err);
        if (bad[i][1] == NULL) {
            KT_EQ_INT(rc, 0);
            continue;
        }
        KT_EQ_INT(rc, KEEL_EINVAL);
        KT_EQ_INT(keel_buf_unread(&err), strlen(bad[i][1]));
        KT_EQ_MEM(keel_buf_rptr(&err), bad[i][1], strlen(bad[i][1]));
        /* and applied anyway (a buggy proposer): the same error, nothing changes */
        KT_EQ_STR(at(1000, bad[i][0]), bad[i][1]);
    }
    keel_buf_free(&err);
    KT_EQ_U64(keel_kv_revision(&t.kv), 0);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"keel.txn", 8), KEEL_KV_WRITE);
}

static void builder_refuses_what_cannot_be_an_entry(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    const uint8_t *k[] = {(const uint8_t *)"k"};
    size_t kl[] = {1};
    uint64_t big[] = {(uint64_t)INT64_MAX + 1};
    KT_EQ_INT(keel_kv_txn_encode(&b, 1, 1, k, kl, big, 0, NULL), KEEL_EINVAL);
    keel_kv_txn_cmd_t empty = {0, NULL, NULL};
    KT_EQ_INT(keel_kv_txn_encode(&b, 1, 0, NULL, NULL, NULL, 1, &empty), KEEL_EINVAL);
    KT_EQ_INT(keel_buf_unread(&b), 0);
    keel_buf_free(&b);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void apply_entry(keel_buf_t *entry, keel_buf_t *reply)
{
    keel_buf_reset(reply);
    if (keel_kv_apply(&t.kv, ++t.index, keel_buf_rptr(entry), keel_buf_unread(entry), reply) != 0)
        KT_FAIL("apply");
}

/*
 * State-machine cost only (no Raft, no network): encode + apply of KEEL.CAS
 * that succeeds (the current version) and that conflicts (a stale one), and
 * of a KEEL.TXN watching one key and running two SETs, over 10,000 keys.
 */
static void measure_cas_and_txn_apply(void)
{
    enum { KEYS = 10000, OPS = 200000 };
    fresh();
    char(*names)[17] = malloc(sizeof(*names) * KEYS);
    for (int i = 0; i < KEYS; i++) {
        snprintf(names[i], sizeof(names[i]), "key:%012d", i);
        char line[64];
        snprintf(line, sizeof(line), "SET %s v", names[i]);
        at(1, line);
    }
    keel_buf_t entry, reply;
    keel_buf_init(&entry, 0);
    keel_buf_init(&reply, 0);
    double ns[3];
    int ok = 0, conflict = 0;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = now_s();
        for (int i = 0; i < OPS; i++) {
            const uint8_t *key = (const uint8_t *)names[((uint64_t)i * 2654435761u) % KEYS];
            uint64_t v = keel_kv_version_at(&t.kv, 1, key, 16);
            keel_buf_reset(&entry);
            if (pass < 2) {
                char vs[24];
                int vn = snprintf(vs, sizeof(vs), "%llu", (unsigned long long)(pass ? v - 1 : v));
                const uint8_t *argv[] = {(const uint8_t *)"KEEL.CAS", key, (const uint8_t *)vs,
                                         (const uint8_t *)"value-0123456789"};
                size_t lens[] = {8, 16, (size_t)vn, 16};
                keel_kv_entry_encode(&entry, 1, 4, argv, lens);
                apply_entry(&entry, &reply);
                if (keel_buf_rptr(&reply)[0] == ':')
                    ok++;
                else
                    conflict++;
            } else {
                const uint8_t *a[] = {(const uint8_t *)"SET", key, (const uint8_t *)"x"};
                const uint8_t *b[] = {(const uint8_t *)"SET", (const uint8_t *)names[i % KEYS],
                                      (const uint8_t *)"y"};
                size_t la[] = {3, 16, 1};
                keel_kv_txn_cmd_t cmds[] = {{3, a, la}, {3, b, la}};
                size_t kl = 16;
                keel_kv_txn_encode(&entry, 1, 1, &key, &kl, &v, 2, cmds);
                apply_entry(&entry, &reply);
                if (keel_buf_unread(&reply) != 14)
                    KT_FAIL("txn reply");
            }
        }
        ns[pass] = (now_s() - t0) / OPS * 1e9;
    }
    KT_EQ_INT(ok, OPS);
    KT_EQ_INT(conflict, OPS);
    fprintf(stderr,
            "     %d keys: KEEL.CAS success %4.0f ns/op, conflict %4.0f ns/op, KEEL.TXN "
            "(1 watch, 2 SETs) %4.0f ns/op (encode+apply, CPU time)\n",
            KEYS, ns[0], ns[1], ns[2]);
    keel_buf_free(&entry);
    keel_buf_free(&reply);
    free(names);
}

int main(void)
{
    kvt_init(&t, NULL);
    KT_RUN(exec_runs_every_command_when_no_watched_key_changed);
    KT_RUN(exec_returns_nil_and_runs_nothing_when_a_watched_key_changed);
    KT_RUN(run_time_errors_stay_inside_the_reply_array);
    KT_RUN(a_syntax_error_is_its_commands_reply_inside_the_array);
    KT_RUN(unknown_commands_and_wrong_arity_are_refused_before_proposing);
    KT_RUN(builder_refuses_what_cannot_be_an_entry);
    KT_RUN(measure_cas_and_txn_apply);
    kvt_free(&t);
    return kt_done();
}
