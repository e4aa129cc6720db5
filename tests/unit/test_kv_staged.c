/* test_kv_staged.c - a large SET value in pieces (kv_staged.c): KEEL.STAGE, KEEL.STAGE.SET,
   KEEL.STAGE.DROP, their limits, the idle sweep and snapshots. */
#include "test_kv_util.h"

#include "base/bytes.h"
#include "base/crc32c.h"
#include "test_oom.h"

#include <stdio.h>

#define PIECE KEEL_KV_STAGE_PIECE_BYTES
#define TOTAL (2 * PIECE + PIECE / 2) /* three pieces, the last a half */

static kvt_t t;
static uint8_t *value; /* TOTAL bytes, different at every offset */
static uint64_t now = 1000;

static void fresh(void)
{
    kvt_free(&t);
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.value_bytes_max = 4 * PIECE;
    kvt_init(&t, &cfg);
}

/* Applies argv at entry time `now` (each call a later entry). */
static const char *apply(int argc, const uint8_t *const *argv, const size_t *lens)
{
    keel_buf_reset(&t.entry);
    keel_buf_reset(&t.reply);
    if (keel_kv_entry_encode(&t.entry, now, argc, argv, lens) != 0)
        abort();
    int rc = keel_kv_apply(&t.kv, ++t.index, keel_buf_rptr(&t.entry), keel_buf_unread(&t.entry),
                           &t.reply);
    if (rc != 0 || keel_buf_unread(&t.reply) >= sizeof(t.text))
        return "(apply failed)";
    memcpy(t.text, keel_buf_rptr(&t.reply), keel_buf_unread(&t.reply));
    t.text[keel_buf_unread(&t.reply)] = '\0';
    return t.text;
}

/* KEEL.STAGE id key total piece (the piece's bytes from `value`, or `len` bytes). */
static const char *piece_of(uint64_t id, const char *key, size_t total, uint32_t i, size_t len)
{
    char ids[32], tot[32], off[32];
    snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
    snprintf(tot, sizeof(tot), "%zu", total);
    snprintf(off, sizeof(off), "%zu", (size_t)i * PIECE);
    const uint8_t *argv[6] = {(const uint8_t *)"KEEL.STAGE", (const uint8_t *)ids,
                              (const uint8_t *)key,          (const uint8_t *)tot,
                              (const uint8_t *)off,          value + (size_t)i * PIECE};
    size_t lens[6] = {10, strlen(ids), strlen(key), strlen(tot), strlen(off), len};
    return apply(6, argv, lens);
}

static const char *piece(uint64_t id, const char *key, uint32_t i)
{
    size_t at = (size_t)i * PIECE;
    return piece_of(id, key, TOTAL, i, TOTAL - at < PIECE ? TOTAL - at : PIECE);
}

static void all_pieces(uint64_t id, const char *key)
{
    for (uint32_t i = 0; i < 3; i++)
        KT_EQ_STR(piece(id, key, i), "+OK\r\n");
}

/* The key's value is `value` whole. */
static void holds_value(const char *key)
{
    keel_kv_value_t v;
    KT_EQ_INT(keel_kv_get(&t.kv, (const uint8_t *)key, strlen(key), &v), 0);
    KT_EQ_U64(v.len, TOTAL);
    KT_CHECK(memcmp(v.value, value, TOTAL) == 0);
}

static void pieces_in_any_order_and_twice_make_the_value(void)
{
    fresh();
    KT_EQ_STR(piece(7, "k", 2), "+OK\r\n");
    KT_EQ_STR(piece(7, "k", 0), "+OK\r\n");
    KT_EQ_STR(piece(7, "k", 2), "+OK\r\n"); /* sent again after an unknown outcome */
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 1);
    KT_EQ_STR(kvt(&t, "EXISTS k"), ":0\r\n"); /* nothing visible before the SET */
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET k 7"),
              "-ERR keel: the large value's pieces did not all arrive (the leader changed or "
              "the server restarted); retry the SET\r\n");
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 0); /* refused: gone */
    KT_EQ_STR(kvt(&t, "EXISTS k"), ":0\r\n");
    all_pieces(8, "k");
    KT_EQ_STR(piece(8, "k", 1), "+OK\r\n");
    uint64_t rev = keel_kv_revision(&t.kv);
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET k 8"), "+OK\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 1); /* one change, at the SET */
    holds_value("k");
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 0);
    /* the same bytes as a plain SET would count */
    KT_EQ_U64(t.kv.bytes, 1 + TOTAL);
}

static void the_set_takes_its_options(void)
{
    fresh();
    KT_EQ_STR(kvt_at(&t, now, "SET k old EX 100"), "+OK\r\n");
    all_pieces(1, "k");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET k 1 NX"), "$-1\r\n"); /* exists: not set */
    KT_EQ_STR(kvt(&t, "GET k"), "$3\r\nold\r\n");
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 0);
    all_pieces(2, "k");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET k 2 XX GET KEEPTTL"), "$3\r\nold\r\n");
    holds_value("k");
    KT_EQ_STR(kvt_read_at(&t, now, "PTTL k"), ":100000\r\n"); /* kept */
    all_pieces(3, "absent");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET absent 3 XX"), "$-1\r\n");
    KT_EQ_STR(kvt(&t, "EXISTS absent"), ":0\r\n");
    all_pieces(4, "k");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET k 4 PX 5000"), "+OK\r\n");
    KT_EQ_STR(kvt_read_at(&t, now, "PTTL k"), ":5000\r\n");
    all_pieces(5, "k");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET k 5 NX XX"), "-ERR syntax error\r\n");
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 0); /* consumed, whatever SET answered */
}

static void it_replaces_other_types_and_expired_keys(void)
{
    fresh();
    KT_EQ_STR(kvt_at(&t, now, "HSET h f v"), ":1\r\n");
    all_pieces(1, "h");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET h 1 GET"),
              "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    KT_EQ_STR(kvt(&t, "TYPE h"), "+hash\r\n");
    all_pieces(2, "h");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET h 2"), "+OK\r\n");
    KT_EQ_STR(kvt(&t, "TYPE h"), "+string\r\n");
    holds_value("h");
    KT_EQ_STR(kvt_at(&t, now, "SET d gone PX 10"), "+OK\r\n");
    now += 100;
    all_pieces(3, "d");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET d 3"), "+OK\r\n");
    holds_value("d");
    KT_EQ_STR(kvt_read_at(&t, now, "PTTL d"), ":-1\r\n");
    KT_EQ_U64(t.kv.bytes, 2 * (1 + TOTAL));
    /* overwritten by a plain SET and deleted: the adopted block is an ordinary entry */
    KT_EQ_STR(kvt_at(&t, now, "SET d small"), "+OK\r\n");
    KT_EQ_STR(kvt_at(&t, now, "APPEND d !"), ":6\r\n");
    KT_EQ_STR(kvt_at(&t, now, "DEL h d"), ":2\r\n");
    KT_EQ_U64(t.kv.bytes, 0);
}

static void pieces_are_checked(void)
{
    fresh();
    KT_EQ_STR(piece_of(1, "k", TOTAL, 0, PIECE - 1),
              "-ERR keel: a staged piece has the wrong length\r\n");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE 1 k 10 3 abc"),
              "-ERR keel: a staged piece's offset is not a piece's start\r\n");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE 1 k 0 0 x"),
              "-ERR keel: a staged piece's offset is not a piece's start\r\n");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE -1 k 3 0 abc"),
              "-ERR value is not an integer or out of range\r\n");
    KT_EQ_STR(piece_of(1, "k", 5 * PIECE, 0, PIECE),
              "-ERR string exceeds maximum allowed size\r\n");
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 0);
    KT_EQ_STR(piece(1, "k", 0), "+OK\r\n");
    KT_EQ_STR(piece(1, "other", 1), "-ERR keel: a staged piece does not match its value\r\n");
    KT_EQ_STR(piece_of(1, "k", TOTAL + 1, 1, PIECE),
              "-ERR keel: a staged piece does not match its value\r\n");
    all_pieces(1, "k");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET other 1"),
              "-ERR keel: the large value's pieces did not all arrive (the leader changed or "
              "the server restarted); retry the SET\r\n");
    KT_EQ_STR(kvt(&t, "EXISTS other"), ":0\r\n");
}

static void at_most_so_many_and_the_idle_are_swept(void)
{
    fresh();
    for (uint64_t id = 1; id <= KEEL_KV_STAGES_MAX; id++)
        KT_EQ_STR(piece(id, "k", 0), "+OK\r\n");
    KT_EQ_STR(piece(99, "k", 0),
              "-ERR keel: too many large values being written at once; retry\r\n");
    KT_EQ_U64(keel_kv_staged_count(&t.kv), KEEL_KV_STAGES_MAX);
    KT_EQ_U64(keel_kv_staged_bytes(&t.kv), (uint64_t)KEEL_KV_STAGES_MAX * TOTAL);
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.DROP 3"), ":1\r\n");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.DROP 3"), ":0\r\n");
    now += KEEL_KV_STAGE_IDLE_MS / 2;
    KT_EQ_STR(piece(1, "k", 1), "+OK\r\n"); /* touched: kept */
    now += KEEL_KV_STAGE_IDLE_MS / 2 + 1;
    KT_EQ_STR(piece(50, "k", 0), "+OK\r\n"); /* the sweep drops the 14 left idle */
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 2);
    KT_EQ_STR(piece(1, "k", 2), "+OK\r\n");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET k 1"), "+OK\r\n");
    holds_value("k");
}

static void a_snapshot_carries_a_value_half_sent(void)
{
    fresh();
    KT_EQ_STR(kvt_at(&t, now, "SET k old"), "+OK\r\n");
    KT_EQ_STR(piece(5, "k", 0), "+OK\r\n");
    KT_EQ_STR(piece(5, "k", 2), "+OK\r\n");
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    keel_kv_config_t cfg = t.kv.cfg;
    uint64_t index = t.index;
    kvt_free(&t);
    kvt_init(&t, &cfg);
    keel_errmsg_t msg;
    KT_EQ_INT(keel_kv_snapshot_decode(&t.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &msg),
              0);
    t.index = index;
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 1);
    KT_EQ_STR(piece(5, "k", 1), "+OK\r\n");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET k 5 GET"), "$3\r\nold\r\n");
    holds_value("k");
    /* a snapshot without staged values reads as before; a damaged section is refused */
    keel_buf_t again;
    keel_buf_init(&again, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &again), 0);
    KT_CHECK(keel_buf_unread(&again) < keel_buf_unread(&snap));
    keel_kv_t other;
    KT_EQ_INT(keel_kv_init(&other, &cfg), 0);
    keel_buf_t bad;
    keel_buf_init(&bad, 0);
    KT_EQ_INT(keel_buf_append(&bad, keel_buf_rptr(&snap), keel_buf_unread(&snap) - 4 - 100), 0);
    KT_CHECK(keel_kv_snapshot_decode(&other, keel_buf_rptr(&bad), keel_buf_unread(&bad), &msg) !=
             0);
    KT_EQ_U64(keel_kv_staged_count(&other), 0);
    keel_kv_free(&other);
    keel_buf_free(&bad);
    keel_buf_free(&again);
    keel_buf_free(&snap);
}

/* The snapshot `snap` (its last section the staged values', tag 3) with that section's
   body replaced by body[0..len); the crc made right again. */
static void with_staged_body(keel_buf_t *out, const keel_buf_t *snap, const uint8_t *body,
                             size_t len)
{
    const uint8_t *p = keel_buf_rptr(snap);
    size_t n = keel_buf_unread(snap);
    uint64_t old = 0;
    size_t at = 0; /* the section header: u32 tag 3 | u64 len, its body running to the crc */
    for (size_t i = 0; i + 12 + 4 <= n; i++)
        if (keel_get_u32(p + i) == 3 && (old = keel_get_u64(p + i + 4)) == n - 4 - (i + 12))
            at = i;
    KT_CHECK(at > 0);
    uint8_t h[12];
    keel_buf_reset(out);
    KT_EQ_INT(keel_buf_append(out, p, at), 0);
    keel_put_u32(h, 3);
    keel_put_u64(h + 4, len);
    KT_EQ_INT(keel_buf_append(out, h, sizeof(h)), 0);
    KT_EQ_INT(keel_buf_append(out, body, len), 0);
    keel_put_u32(h, keel_crc32c(0, keel_buf_rptr(out), keel_buf_unread(out)));
    KT_EQ_INT(keel_buf_append(out, h, 4), 0);
}

/* What the writer never writes is refused: a decoded snapshot encodes to the same bytes
   (fuzz_kv's property), and one staged id stands for one value. */
static void a_snapshot_section_the_writer_never_writes_is_refused(void)
{
    fresh();
    KT_EQ_STR(piece(7, "k", 0), "+OK\r\n");
    keel_buf_t snap, bad, body;
    keel_buf_init(&snap, 0);
    keel_buf_init(&bad, 0);
    keel_buf_init(&body, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    keel_kv_config_t cfg = t.kv.cfg;
    keel_errmsg_t msg;
    keel_kv_t other;
    /* the body as written decodes (the helper is right) */
    const uint8_t *p = keel_buf_rptr(&snap);
    size_t n = keel_buf_unread(&snap);
    size_t one = 28 + 1 + 1 + TOTAL; /* id, total, touched, key_len | key | have | value */
    KT_EQ_INT(keel_buf_append(&body, p + n - 4 - one - 4, 4 + one), 0);
    KT_EQ_U64(keel_get_u32(keel_buf_rptr(&body)), 1);
    with_staged_body(&bad, &snap, keel_buf_rptr(&body), keel_buf_unread(&body));
    KT_EQ_INT(keel_kv_init(&other, &cfg), 0);
    KT_EQ_INT(keel_kv_snapshot_decode(&other, keel_buf_rptr(&bad), keel_buf_unread(&bad), &msg), 0);
    KT_EQ_U64(keel_kv_staged_count(&other), 1);
    keel_kv_free(&other);
    /* an empty section: never written (a snapshot without staged values has none) */
    uint8_t zero[4] = {0};
    with_staged_body(&bad, &snap, zero, 4);
    KT_EQ_INT(keel_kv_init(&other, &cfg), 0);
    KT_CHECK(keel_kv_snapshot_decode(&other, keel_buf_rptr(&bad), keel_buf_unread(&bad), &msg) !=
             0);
    keel_kv_free(&other);
    /* the same id twice */
    keel_buf_t twice;
    keel_buf_init(&twice, 0);
    uint8_t two[4];
    keel_put_u32(two, 2);
    KT_EQ_INT(keel_buf_append(&twice, two, 4), 0);
    KT_EQ_INT(keel_buf_append(&twice, keel_buf_rptr(&body) + 4, one), 0);
    KT_EQ_INT(keel_buf_append(&twice, keel_buf_rptr(&body) + 4, one), 0);
    with_staged_body(&bad, &snap, keel_buf_rptr(&twice), keel_buf_unread(&twice));
    KT_EQ_INT(keel_kv_init(&other, &cfg), 0);
    KT_CHECK(keel_kv_snapshot_decode(&other, keel_buf_rptr(&bad), keel_buf_unread(&bad), &msg) !=
             0);
    KT_EQ_U64(keel_kv_staged_count(&other), 0);
    keel_kv_free(&other);
    keel_buf_free(&twice);
    keel_buf_free(&body);
    keel_buf_free(&bad);
    keel_buf_free(&snap);
}

/* The adopted block takes the old entry's place in the deadline index and in its lease's
   list of keys (KEEPTTL keeps both): the sweep and the revoke find it there. */
static void the_deadline_and_the_lease_follow_the_entry(void)
{
    fresh();
    KT_EQ_STR(kvt_at(&t, now, "SET a x PX 500"), "+OK\r\n");
    KT_EQ_STR(kvt_at(&t, now, "SET k old PX 1000"), "+OK\r\n");
    KT_EQ_STR(kvt_at(&t, now, "SET z x PX 2000"), "+OK\r\n");
    all_pieces(1, "k");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET k 1 KEEPTTL"), "+OK\r\n");
    holds_value("k");
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "KEEL.EXPIRE.SWEEP %llu 10", (unsigned long long)(now + 1500));
    KT_EQ_STR(kvt_at(&t, now + 1500, cmd), ":2\r\n"); /* a and k, through the index */
    KT_EQ_STR(kvt(&t, "EXISTS a k z"), ":1\r\n");
    KT_EQ_U64(t.kv.bytes, 2);
    now += 2000;
    KT_EQ_STR(kvt_at(&t, now, "KEEL.LEASE GRANT 100000"), ":1\r\n");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.SET k old LEASE 1"), "+OK\r\n");
    all_pieces(2, "k");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.STAGE.SET k 2 KEEPTTL"), "+OK\r\n");
    holds_value("k");
    KT_EQ_STR(kvt_at(&t, now, "KEEL.LEASE REVOKE 1"), ":1\r\n"); /* k went with it */
    KT_EQ_STR(kvt(&t, "EXISTS k"), ":0\r\n");
}

/* keel_kv_apply's promise: KEEL_ENOMEM leaves the state as it was. The idle sweep is a
   change too, so no allocation may fail after it: every allocation of the command is made to
   fail in turn, and each time the staged values and the key are as before. */
static const char *stage_set_k2(void)
{
    const uint8_t *argv[5] = {(const uint8_t *)"KEEL.STAGE.SET", (const uint8_t *)"k",
                              (const uint8_t *)"2", (const uint8_t *)"PX", (const uint8_t *)"5000"};
    size_t lens[5] = {14, 1, 1, 2, 4};
    return apply(5, argv, lens);
}

static void a_failed_allocation_changes_nothing(void)
{
    if (!KVT_OOM) {
        printf("skip a_failed_allocation_changes_nothing (sanitizer build)\n");
        return;
    }
    for (int set = 0; set < 2; set++) { /* a new value's first piece; then the SET */
        int injected = 1, failed = 0;
        for (long n = 0; injected; n++) {
            KT_CHECK(n < 100);
            fresh();
            now = 1000;
            KT_EQ_STR(piece(1, "idle", 0), "+OK\r\n");
            now += 30000;
            all_pieces(2, "k");
            now += 30500; /* 1 is idle past the limit, 2 is not */
            long f0 = failures;
            fail_in = n;
            const char *got = set ? stage_set_k2() : piece(3, "other", 0);
            fail_in = -1;
            injected = failures != f0;
            if (strcmp(got, "(apply failed)") == 0) {
                KT_CHECK(injected);
                failed++;
                KT_EQ_U64(keel_kv_staged_count(&t.kv), 2); /* 1 not swept, 3 not made */
                KT_EQ_STR(kvt(&t, "EXISTS k"), ":0\r\n");
                continue;
            }
            KT_EQ_STR(got, "+OK\r\n");
            KT_EQ_U64(keel_kv_staged_count(&t.kv), set ? 0 : 2); /* 1 swept; 2 taken or 3 made */
            if (set)
                holds_value("k");
        }
        KT_CHECK(failed > 0);
    }
}

static void the_expiry_sweep_drops_what_fell_idle(void)
{
    fresh();
    now = 5000;
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), KEEL_KV_NO_DEADLINE);
    KT_EQ_STR(piece(1, "a", 0), "+OK\r\n");
    now += 10;
    KT_EQ_STR(piece(2, "b", 1), "+OK\r\n");
    KT_EQ_STR(kvt_at(&t, now, "SET k v PX 100000000"), "+OK\r\n");
    /* the first to fall idle brings the leader's sweep; no key is due before it */
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), 5000 + KEEL_KV_STAGE_IDLE_MS + 1);
    char line[64];
    uint64_t due = 5000 + KEEL_KV_STAGE_IDLE_MS + 1;
    snprintf(line, sizeof(line), "KEEL.EXPIRE.SWEEP %llu 100", (unsigned long long)due - 1);
    KT_EQ_STR(kvt_at(&t, due, line), ":0\r\n"); /* not yet idle by the leader's now */
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 2);
    snprintf(line, sizeof(line), "KEEL.EXPIRE.SWEEP %llu 100", (unsigned long long)due);
    KT_EQ_STR(kvt_at(&t, due, line), ":0\r\n"); /* keys removed: none; the value: gone */
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 1);
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), due + 10);
    snprintf(line, sizeof(line), "KEEL.EXPIRE.SWEEP %llu 100", (unsigned long long)due + 10);
    KT_EQ_STR(kvt_at(&t, due + 10, line), ":0\r\n");
    KT_EQ_U64(keel_kv_staged_count(&t.kv), 0);
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), now + 100000000);
    now = 1000;
}

int main(void)
{
    value = malloc(TOTAL);
    for (size_t i = 0; i < TOTAL; i++)
        value[i] = (uint8_t)(i * 131 + i / 251);
    kvt_init(&t, NULL);
    KT_RUN(pieces_in_any_order_and_twice_make_the_value);
    KT_RUN(the_set_takes_its_options);
    KT_RUN(it_replaces_other_types_and_expired_keys);
    KT_RUN(pieces_are_checked);
    KT_RUN(at_most_so_many_and_the_idle_are_swept);
    KT_RUN(a_snapshot_carries_a_value_half_sent);
    KT_RUN(the_deadline_and_the_lease_follow_the_entry);
    KT_RUN(a_snapshot_section_the_writer_never_writes_is_refused);
    KT_RUN(a_failed_allocation_changes_nothing);
    KT_RUN(the_expiry_sweep_drops_what_fell_idle);
    kvt_free(&t);
    free(value);
    return kt_done();
}
