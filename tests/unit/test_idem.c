/* test_idem.c - tx/idem.c's pure part: keys, fingerprints, the stored record (round trip,
 * headers kept, every cut or damaged record refused) and the decision for a repeat. The
 * exchange with keel server through the kit: tests/system/test_outbox.py. */
#include "base/buf.h"
#include "base/err.h"
#include "ktest.h"
#include "tx/idem.h"

#include <stdlib.h>
#include <string.h>

static void keys_are_one_to_255_visible_ascii_characters(void)
{
    char big[300];
    memset(big, 'k', sizeof(big));
    KT_CHECK(keel_idem_key_valid("a", 1));
    KT_CHECK(keel_idem_key_valid("8e03978e-40d5-43e8-bc93-6894a57f9324", 36));
    KT_CHECK(keel_idem_key_valid(big, 255));
    KT_CHECK(!keel_idem_key_valid(big, 256));
    KT_CHECK(!keel_idem_key_valid("", 0));
    KT_CHECK(!keel_idem_key_valid("a b", 3));
    KT_CHECK(!keel_idem_key_valid("a\nb", 3));
    KT_CHECK(!keel_idem_key_valid("caf\xc3\xa9", 5));
}

static void a_fingerprint_covers_method_target_and_body(void)
{
    char a[65], b[65];
    keel_idem_fingerprint("POST", "/orders", 7, "x=1", 3, a);
    KT_EQ_INT(strlen(a), 64);
    keel_idem_fingerprint("POST", "/orders", 7, "x=1", 3, b);
    KT_EQ_STR(a, b);
    keel_idem_fingerprint("PUT", "/orders", 7, "x=1", 3, b);
    KT_CHECK(strcmp(a, b) != 0);
    keel_idem_fingerprint("POST", "/orders?y", 9, "x=1", 3, b);
    KT_CHECK(strcmp(a, b) != 0);
    keel_idem_fingerprint("POST", "/orders", 7, "x=2", 3, b);
    KT_CHECK(strcmp(a, b) != 0);
    /* SHA-256 of "GET\n/\n", as `printf 'GET\n/\n' | sha256sum` gives it */
    keel_idem_fingerprint("GET", "/", 1, NULL, 0, b);
    KT_EQ_STR(b, "139fb16fdd19069e75f6f3dd0e619a89fb157dab65e8722c66e6b3fd43f7900c");
}

static void an_answer_round_trips_with_only_the_headers_that_matter(void)
{
    char fp[65];
    keel_idem_fingerprint("POST", "/notes", 6, "hi", 2, fp);
    keel_http_header_t h[] = {
        {.name = "Content-Type", .name_len = 12, .value = "application/json", .value_len = 16},
        {.name = "X-Request-Id", .name_len = 12, .value = "abc", .value_len = 3},
        {.name = "location", .name_len = 8, .value = "/notes/n1", .value_len = 9},
        {.name = "Set-Cookie", .name_len = 10, .value = "s=1", .value_len = 3},
    };
    static const char body[] = "{\"id\":\"n1\"}\n\0binary";
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_idem_encode_answer(&b, fp, 201, h, 4, body, sizeof(body) - 1), 0);
    size_t len = keel_buf_unread(&b);
    uint8_t *copy = malloc(len);
    memcpy(copy, keel_buf_rptr(&b), len);
    keel_idem_record_t rec;
    KT_EQ_INT(keel_idem_decode(copy, len, &rec), 0);
    KT_CHECK(rec.done);
    KT_EQ_STR(rec.fingerprint, fp);
    KT_EQ_INT(rec.status, 201);
    KT_EQ_INT(rec.headers_n, 2);
    KT_EQ_STR(rec.headers[0].name, "Content-Type");
    KT_EQ_STR(rec.headers[0].value, "application/json");
    KT_EQ_STR(rec.headers[1].name, "location");
    KT_EQ_INT(rec.headers[1].value_len, 9);
    KT_EQ_INT(rec.body_len, sizeof(body) - 1);
    KT_EQ_MEM(rec.body, body, sizeof(body) - 1);
    /* every cut of the record is refused, never read as a shorter answer */
    for (size_t cut = 0; cut < len; cut++) {
        memcpy(copy, keel_buf_rptr(&b), len);
        KT_EQ_INT(keel_idem_decode(copy, cut, &rec), KEEL_ECORRUPT);
    }
    /* an empty body, no headers */
    keel_buf_reset(&b);
    KT_EQ_INT(keel_idem_encode_answer(&b, fp, 204, NULL, 0, NULL, 0), 0);
    len = keel_buf_unread(&b);
    memcpy(copy, keel_buf_rptr(&b), len);
    KT_EQ_INT(keel_idem_decode(copy, len, &rec), 0);
    KT_EQ_INT(rec.status, 204);
    KT_EQ_INT(rec.headers_n, 0);
    KT_EQ_INT(rec.body_len, 0);
    free(copy);
    keel_buf_free(&b);
}

static void damaged_records_are_refused(void)
{
    char fp[65];
    keel_idem_fingerprint("POST", "/", 1, NULL, 0, fp);
    char text[256];
    keel_idem_record_t rec;
    const char *bad[] = {
        "X %s",                    /* unknown kind */
        "P %s extra",              /* a claim is its fingerprint and a 16-digit nonce */
        "P %s 0123456789abcdeg",   /* nonce not hex */
        "P %s 0123456789abcde",    /* nonce too short */
        "P %s 0123456789abcdef0",  /* too long */
        "D %s 2x1 0\n\n",          /* status */
        "D %s 099 0\n\n",          /* status below 100 */
        "D %s 200 3\n\nab",        /* body shorter than said */
        "D %s 200 1\n\nab",        /* longer */
        "D %s 200 0\nNoColon\n\n", /* header line */
        "D %s 200 0\n: v\n\n",     /* empty name */
        "D %s 200 0\nA: 1\n",      /* no blank line */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int n = snprintf(text, sizeof(text), bad[i], fp);
        KT_EQ_INT(keel_idem_decode((uint8_t *)text, (size_t)n, &rec), KEEL_ECORRUPT);
    }
    int n = snprintf(text, sizeof(text), "P %s", fp);
    text[5] = 'G'; /* not hex */
    KT_EQ_INT(keel_idem_decode((uint8_t *)text, (size_t)n, &rec), KEEL_ECORRUPT);
}

static void a_repeat_is_run_replayed_refused_or_told_to_wait(void)
{
    char fp[65], other[65];
    keel_idem_fingerprint("POST", "/pay", 4, "10", 2, fp);
    keel_idem_fingerprint("POST", "/pay", 4, "11", 2, other);
    keel_buf_t b;
    keel_buf_init(&b, 0);
    keel_idem_record_t claim, answer;
    KT_EQ_INT(keel_idem_encode_claim(&b, fp, "00112233445566ff"), 0);
    uint8_t claim_text[128], answer_text[256];
    size_t n = keel_buf_unread(&b);
    memcpy(claim_text, keel_buf_rptr(&b), n);
    KT_EQ_INT(keel_idem_decode(claim_text, n, &claim), 0);
    KT_CHECK(!claim.done);
    KT_EQ_STR(claim.nonce, "00112233445566ff");
    /* a claim written before nonces still reads, with none */
    keel_idem_record_t old;
    char old_text[80];
    int on = snprintf(old_text, sizeof(old_text), "P %s", fp);
    KT_EQ_INT(keel_idem_decode((uint8_t *)old_text, (size_t)on, &old), 0);
    KT_CHECK(!old.done && old.nonce[0] == '\0');
    keel_buf_reset(&b);
    KT_EQ_INT(keel_idem_encode_answer(&b, fp, 200, NULL, 0, "ok", 2), 0);
    n = keel_buf_unread(&b);
    memcpy(answer_text, keel_buf_rptr(&b), n);
    KT_EQ_INT(keel_idem_decode(answer_text, n, &answer), 0);
    KT_EQ_INT(keel_idem_decide(NULL, fp), KEEL_IDEM_RUN);
    KT_EQ_INT(keel_idem_decide(&claim, fp), KEEL_IDEM_IN_PROGRESS);
    KT_EQ_INT(keel_idem_decide(&answer, fp), KEEL_IDEM_REPLAY);
    KT_EQ_INT(keel_idem_decide(&claim, other), KEEL_IDEM_MISMATCH);
    KT_EQ_INT(keel_idem_decide(&answer, other), KEEL_IDEM_MISMATCH);
    keel_buf_free(&b);
}

int main(void)
{
    KT_RUN(keys_are_one_to_255_visible_ascii_characters);
    KT_RUN(a_fingerprint_covers_method_target_and_body);
    KT_RUN(an_answer_round_trips_with_only_the_headers_that_matter);
    KT_RUN(damaged_records_are_refused);
    KT_RUN(a_repeat_is_run_replayed_refused_or_told_to_wait);
    return kt_done();
}
