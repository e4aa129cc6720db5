/* test_trace.c - traceparent and B3 parsing, id generation, spans as Zipkin v2 JSON. */
#include "base/buf.h"
#include "base/rand.h"
#include "proto/trace.h"
#include "ktest.h"

#include <jansson.h>
#include <stdlib.h>

/* keel_buf_rptr() of a never-allocated buffer is NULL + 0, which clang's UBSan flags. */
#define RPTR(b) ((b)->data ? keel_buf_rptr(b) : (const uint8_t *)"")

#define TP_OK "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int tp(const char *s, keel_trace_ctx_t *c)
{
    return keel_trace_parse_traceparent(s, strlen(s), c);
}

static void parses_and_formats_a_w3c_traceparent(void)
{
    keel_trace_ctx_t c;
    KT_EQ_INT(tp(TP_OK, &c), 0);
    char hex[33];
    keel_trace_id_hex(&c, hex);
    KT_EQ_STR(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
    keel_trace_span_hex(c.span_id, hex);
    KT_EQ_STR(hex, "00f067aa0ba902b7");
    KT_EQ_INT(c.flags, KEEL_TRACE_FLAG_SAMPLED);
    KT_CHECK(!keel_trace_has_parent(&c));
    char out[KEEL_TRACEPARENT_LEN + 1];
    keel_trace_format_traceparent(&c, out);
    KT_EQ_STR(out, TP_OK);
    KT_EQ_INT(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c), 0);
    KT_EQ_INT(c.flags, 0);
}

static void rejects_invalid_traceparents(void)
{
    keel_trace_ctx_t c;
    const char *bad[] = {
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero span id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       /* version ff */
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",        /* short trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", /* v00 is 55 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* future: '-' needed */
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (tp(bad[i], &c) != KEEL_EPROTO)
            KT_FAIL("accepted \"%s\"", bad[i]);
    /* a future version may append fields after a '-' */
    KT_EQ_INT(tp("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever", &c), 0);
    /* the parser reads only n bytes: a valid header cut short is rejected */
    KT_EQ_INT(keel_trace_parse_traceparent(TP_OK, 54, &c), KEEL_EPROTO);
}

static keel_trace_str_t S(const char *s)
{
    keel_trace_str_t v = {s, s ? strlen(s) : 0};
    return v;
}

static void accepts_b3_multi_headers(void)
{
    keel_trace_b3_t h = {S("80f198ee56343ba864fe8b2a57d3eff7"), S("e457b5a2e4d86bd1"),
                         S("05e3ac9a4f6e3b90"), S("1"), S(NULL)};
    keel_trace_ctx_t c;
    KT_EQ_INT(keel_trace_parse_b3_multi(&h, &c), 0);
    char hex[33];
    keel_trace_id_hex(&c, hex);
    KT_EQ_STR(hex, "80f198ee56343ba864fe8b2a57d3eff7");
    keel_trace_span_hex(c.parent_id, hex);
    KT_EQ_STR(hex, "05e3ac9a4f6e3b90");
    KT_EQ_INT(c.flags, KEEL_TRACE_FLAG_SAMPLED);
    KT_EQ_INT(c.deferred, 0);
    /* 64-bit trace id is the low half of a 128-bit id; no sampled header defers */
    keel_trace_b3_t h64 = {S("a3ce929d0e0e4736"), S("00f067aa0ba902b7"), S(NULL), S(NULL), S(NULL)};
    KT_EQ_INT(keel_trace_parse_b3_multi(&h64, &c), 0);
    keel_trace_id_hex(&c, hex);
    KT_EQ_STR(hex, "0000000000000000a3ce929d0e0e4736");
    KT_EQ_INT(c.deferred, 1);
    KT_CHECK(!keel_trace_has_parent(&c));
    h64.sampled = S("false");
    KT_EQ_INT(keel_trace_parse_b3_multi(&h64, &c), 0);
    KT_EQ_INT(c.flags, 0);
    h64.flags = S("1"); /* debug wins and implies sampled */
    KT_EQ_INT(keel_trace_parse_b3_multi(&h64, &c), 0);
    KT_EQ_INT(c.flags, KEEL_TRACE_FLAG_SAMPLED);
}

static void rejects_bad_b3_multi_headers(void)
{
    keel_trace_ctx_t c;
    keel_trace_b3_t bad[] = {
        {S("80f198ee56343ba864fe8b2a57d3eff"), S("e457b5a2e4d86bd1"), S(NULL), S(NULL), S(NULL)},
        {S("80f198ee56343ba864fe8b2a57d3eff7"), S("e457b5a2e4d86bd"), S(NULL), S(NULL), S(NULL)},
        {S("80F198EE56343BA864FE8B2A57D3EFF7"), S("e457b5a2e4d86bd1"), S(NULL), S(NULL), S(NULL)},
        {S("0000000000000000"), S("e457b5a2e4d86bd1"), S(NULL), S(NULL), S(NULL)},
        {S("80f198ee56343ba8"), S("0000000000000000"), S(NULL), S(NULL), S(NULL)},
        {S("80f198ee56343ba8"), S("e457b5a2e4d86bd1"), S("xyz"), S(NULL), S(NULL)},
        {S("80f198ee56343ba8"), S("e457b5a2e4d86bd1"), S(NULL), S("yes"), S(NULL)},
        {S(NULL), S("e457b5a2e4d86bd1"), S(NULL), S(NULL), S(NULL)},
        {S("80f198ee56343ba8"), S(NULL), S(NULL), S(NULL), S(NULL)},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (keel_trace_parse_b3_multi(&bad[i], &c) != KEEL_EPROTO)
            KT_FAIL("accepted case %zu", i);
}

static int b3(const char *s, keel_trace_ctx_t *c)
{
    return keel_trace_parse_b3_single(s, strlen(s), c);
}

static void accepts_the_single_b3_header(void)
{
    keel_trace_ctx_t c;
    const char *full = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90";
    KT_EQ_INT(b3(full, &c), 0);
    KT_EQ_INT(c.flags, KEEL_TRACE_FLAG_SAMPLED);
    KT_CHECK(keel_trace_has_parent(&c));
    char out[KEEL_TRACE_B3_BYTES_MAX];
    keel_trace_format_b3_single(&c, out);
    KT_EQ_STR(out, full);
    KT_EQ_INT(b3("a3ce929d0e0e4736-00f067aa0ba902b7", &c), 0);
    KT_EQ_INT(c.deferred, 1);
    KT_EQ_INT(b3("a3ce929d0e0e4736-00f067aa0ba902b7-d", &c), 0);
    KT_EQ_INT(c.flags, KEEL_TRACE_FLAG_SAMPLED);
    KT_EQ_INT(b3("a3ce929d0e0e4736-00f067aa0ba902b7-0", &c), 0);
    KT_EQ_INT(c.flags, 0);
    KT_EQ_INT(b3("0", &c), KEEL_ENOTFOUND);
    KT_EQ_INT(c.flags, 0);
    KT_EQ_INT(b3("1", &c), KEEL_ENOTFOUND);
    KT_EQ_INT(c.flags, KEEL_TRACE_FLAG_SAMPLED);
    const char *bad[] = {"",
                         "2",
                         "a3ce929d0e0e4736",
                         "a3ce929d0e0e4736-00f067aa0ba902b",
                         "a3ce929d0e0e4736-00f067aa0ba902b7-",
                         "a3ce929d0e0e4736-00f067aa0ba902b7-x",
                         "a3ce929d0e0e4736-00f067aa0ba902b7-1-",
                         "a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3",
                         "a3ce929d0e0e4736-00f067aa0ba902b7-05e3ac9a4f6e3b90",
                         "0000000000000000-00f067aa0ba902b7-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (b3(bad[i], &c) != KEEL_EPROTO)
            KT_FAIL("accepted \"%s\"", bad[i]);
}

static void children_keep_the_trace_and_point_at_their_parent(void)
{
    uint64_t seed = 99;
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    keel_trace_ctx_t root, child, grandchild;
    keel_trace_new_root(&r, 1, &root);
    KT_CHECK(!keel_trace_has_parent(&root));
    KT_EQ_INT(root.flags, KEEL_TRACE_FLAG_SAMPLED);
    keel_trace_child(&root, &r, &child);
    keel_trace_child(&child, &r, &grandchild);
    KT_EQ_MEM(child.trace_id, root.trace_id, KEEL_TRACE_ID_BYTES);
    KT_EQ_MEM(grandchild.trace_id, root.trace_id, KEEL_TRACE_ID_BYTES);
    KT_EQ_MEM(child.parent_id, root.span_id, KEEL_SPAN_ID_BYTES);
    KT_EQ_MEM(grandchild.parent_id, child.span_id, KEEL_SPAN_ID_BYTES);
    KT_CHECK(memcmp(child.span_id, root.span_id, KEEL_SPAN_ID_BYTES) != 0);
    KT_EQ_INT(grandchild.flags, KEEL_TRACE_FLAG_SAMPLED);
    /* formatted ids parse back; same seed gives the same ids */
    char s[KEEL_TRACEPARENT_LEN + 1];
    keel_trace_format_traceparent(&child, s);
    keel_trace_ctx_t back;
    KT_EQ_INT(tp(s, &back), 0);
    KT_EQ_MEM(back.span_id, child.span_id, KEEL_SPAN_ID_BYTES);
    keel_rand_t r2;
    keel_rand_seed(&r2, seed);
    keel_trace_ctx_t again;
    keel_trace_new_root(&r2, 1, &again);
    KT_EQ_MEM(again.trace_id, root.trace_id, KEEL_TRACE_ID_BYTES);
    /* 10000 ids, no zero and no repeat among span ids of one trace */
    for (int i = 0; i < 10000; i++) {
        keel_trace_ctx_t a;
        keel_trace_new_root(&r, 0, &a);
        static const uint8_t zero[KEEL_TRACE_ID_BYTES];
        KT_CHECK(memcmp(a.trace_id, zero, KEEL_TRACE_ID_BYTES) != 0);
        KT_CHECK(memcmp(a.span_id, zero, KEEL_SPAN_ID_BYTES) != 0);
        KT_EQ_INT(a.flags, 0);
    }
}

/* Seeded: formatted contexts parse back; any one-character change parses or is rejected cleanly. */
static void random_contexts_round_trip_and_mutations_never_crash(void)
{
    uint64_t seed = 424242;
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    const char alphabet[] = "0123456789abcdefABCDEF-xz\0";
    for (int i = 0; i < 20000; i++) {
        keel_trace_ctx_t root, c, back;
        keel_trace_new_root(&r, (int)keel_rand_below(&r, 2), &root);
        keel_trace_child(&root, &r, &c);
        char tp_s[KEEL_TRACEPARENT_LEN + 1], b3_s[KEEL_TRACE_B3_BYTES_MAX];
        keel_trace_format_traceparent(&c, tp_s);
        KT_EQ_INT(tp(tp_s, &back), 0);
        KT_EQ_MEM(back.trace_id, c.trace_id, KEEL_TRACE_ID_BYTES);
        KT_EQ_MEM(back.span_id, c.span_id, KEEL_SPAN_ID_BYTES);
        KT_EQ_INT(back.flags, c.flags);
        keel_trace_format_b3_single(&c, b3_s);
        KT_EQ_INT(b3(b3_s, &back), 0);
        KT_EQ_MEM(back.trace_id, c.trace_id, KEEL_TRACE_ID_BYTES);
        KT_EQ_MEM(back.parent_id, c.parent_id, KEEL_SPAN_ID_BYTES);
        KT_EQ_INT(back.flags, c.flags);
        /* mutate one character and cut at a random length: must not crash or read past n */
        size_t at = (size_t)keel_rand_below(&r, KEEL_TRACEPARENT_LEN);
        tp_s[at] = alphabet[keel_rand_below(&r, sizeof(alphabet) - 1)];
        size_t n = (size_t)keel_rand_below(&r, KEEL_TRACEPARENT_LEN + 1);
        char *heap = malloc(n ? n : 1); /* exact size, so ASan sees any overread */
        memcpy(heap, tp_s, n);
        int rc = keel_trace_parse_traceparent(heap, n, &back);
        KT_CHECK(rc == 0 || rc == KEEL_EPROTO);
        if (rc == 0) { /* accepted: ids and flags are exactly what the text said */
            char again[KEEL_TRACEPARENT_LEN + 1];
            keel_trace_format_traceparent(&back, again);
            KT_EQ_INT(n, KEEL_TRACEPARENT_LEN);
            KT_EQ_MEM(again + 2, heap + 2, KEEL_TRACEPARENT_LEN - 2);
        }
        size_t m = strlen(b3_s);
        size_t bn = (size_t)keel_rand_below(&r, m + 1);
        memcpy(heap, b3_s, bn < n ? bn : n);
        rc = keel_trace_parse_b3_single(heap, bn < n ? bn : n, &back);
        KT_CHECK(rc == 0 || rc == KEEL_EPROTO || rc == KEEL_ENOTFOUND);
        free(heap);
    }
}

static json_t *render(const keel_span_t *s)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_span_to_zipkin_json(s, &b), 0);
    json_error_t err;
    json_t *j = json_loadb((const char *)RPTR(&b), keel_buf_unread(&b), 0, &err);
    if (j == NULL)
        KT_FAIL("invalid JSON (%s): %.*s", err.text, (int)keel_buf_unread(&b),
                (const char *)RPTR(&b));
    keel_buf_free(&b);
    return j;
}

static void renders_a_span_as_zipkin_v2_json(void)
{
    keel_trace_ctx_t parent, c;
    KT_EQ_INT(tp(TP_OK, &parent), 0);
    keel_rand_t r;
    keel_rand_seed(&r, 5);
    keel_trace_child(&parent, &r, &c);
    keel_span_t s;
    keel_span_init(&s, &c, KEEL_SPAN_KIND_SERVER, "gateway", "GET /orders", 1700000000000000);
    KT_EQ_INT(keel_span_set_attr(&s, "http.method", "GET"), 0);
    KT_EQ_INT(keel_span_set_attr(&s, "quote\"back\\slash", "nl\nctl\x01 tab\t"), 0);
    KT_EQ_INT(keel_span_set_attr(&s, "utf8", "caf\xc3\xa9 \xe2\x82\xac bad\xff\xc3 end"), 0);
    keel_span_end(&s, 1700000000001500, KEEL_SPAN_ERROR);
    json_t *j = render(&s);
    KT_EQ_STR(json_string_value(json_object_get(j, "traceId")), "4bf92f3577b34da6a3ce929d0e0e4736");
    KT_EQ_STR(json_string_value(json_object_get(j, "parentId")), "00f067aa0ba902b7");
    char sid[17];
    keel_trace_span_hex(c.span_id, sid);
    KT_EQ_STR(json_string_value(json_object_get(j, "id")), sid);
    KT_EQ_STR(json_string_value(json_object_get(j, "name")), "GET /orders");
    KT_EQ_STR(json_string_value(json_object_get(j, "kind")), "SERVER");
    KT_EQ_U64(json_integer_value(json_object_get(j, "timestamp")), 1700000000000000);
    KT_EQ_U64(json_integer_value(json_object_get(j, "duration")), 1500);
    KT_EQ_STR(
        json_string_value(json_object_get(json_object_get(j, "localEndpoint"), "serviceName")),
        "gateway");
    json_t *tags = json_object_get(j, "tags");
    KT_EQ_STR(json_string_value(json_object_get(tags, "http.method")), "GET");
    KT_EQ_STR(json_string_value(json_object_get(tags, "quote\"back\\slash")), "nl\nctl\x01 tab\t");
    KT_EQ_STR(json_string_value(json_object_get(tags, "utf8")),
              "caf\xc3\xa9 \xe2\x82\xac bad\xef\xbf\xbd\xef\xbf\xbd end");
    KT_EQ_STR(json_string_value(json_object_get(tags, "error")), "true");
    json_decref(j);
}

static void a_client_span_names_its_remote_endpoint(void)
{
    keel_rand_t r;
    keel_rand_seed(&r, 8);
    keel_trace_ctx_t c;
    keel_trace_new_root(&r, 1, &c);
    keel_span_t s;
    keel_span_init(&s, &c, KEEL_SPAN_KIND_CLIENT, "gateway", "GET orders", 5);
    KT_EQ_INT(keel_span_set_remote(&s, "orders\"v1", "127.0.0.1", 9001), 0);
    keel_span_end(&s, 9, KEEL_SPAN_OK);
    json_t *j = render(&s);
    json_t *re = json_object_get(j, "remoteEndpoint");
    KT_EQ_STR(json_string_value(json_object_get(re, "serviceName")), "orders\"v1");
    KT_EQ_STR(json_string_value(json_object_get(re, "ipv4")), "127.0.0.1");
    KT_CHECK(json_object_get(re, "ipv6") == NULL);
    KT_EQ_INT(json_integer_value(json_object_get(re, "port")), 9001);
    KT_EQ_STR(json_string_value(json_object_get(j, "kind")), "CLIENT");
    json_decref(j);
    /* IPv6, no service name, no port */
    keel_span_init(&s, &c, KEEL_SPAN_KIND_CLIENT, "gateway", "GET orders", 5);
    KT_EQ_INT(keel_span_set_remote(&s, NULL, "::1", 0), 0);
    j = render(&s);
    re = json_object_get(j, "remoteEndpoint");
    KT_EQ_STR(json_string_value(json_object_get(re, "ipv6")), "::1");
    KT_CHECK(json_object_get(re, "serviceName") == NULL);
    KT_CHECK(json_object_get(re, "port") == NULL);
    json_decref(j);
    /* a span without one has none */
    keel_span_init(&s, &c, KEEL_SPAN_KIND_SERVER, "gateway", "GET orders", 5);
    j = render(&s);
    KT_CHECK(json_object_get(j, "remoteEndpoint") == NULL);
    json_decref(j);
    /* no text space left: refused, span unchanged */
    char big[2020]; /* leaves 6 bytes of text */
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    KT_EQ_INT(keel_span_set_attr(&s, "a", big), 0);
    KT_EQ_INT(keel_span_set_remote(&s, "svc", "2001:db8::1", 1), KEEL_EFULL);
    KT_EQ_INT(s.has_remote, 0);
}

static void a_root_span_without_duration_or_tags_omits_them(void)
{
    keel_rand_t r;
    keel_rand_seed(&r, 6);
    keel_trace_ctx_t c;
    keel_trace_new_root(&r, 1, &c);
    keel_span_t s;
    keel_span_init(&s, &c, KEEL_SPAN_KIND_NONE, "", "op", 10);
    json_t *j = render(&s);
    KT_CHECK(json_object_get(j, "parentId") == NULL);
    KT_CHECK(json_object_get(j, "duration") == NULL);
    KT_CHECK(json_object_get(j, "kind") == NULL);
    KT_CHECK(json_object_get(j, "tags") == NULL);
    KT_CHECK(json_object_get(j, "localEndpoint") == NULL);
    json_decref(j);
    keel_span_end(&s, 10, KEEL_SPAN_OK); /* zero duration rounds up to 1 (Zipkin) */
    j = render(&s);
    KT_EQ_INT(json_integer_value(json_object_get(j, "duration")), 1);
    json_decref(j);
}

static void span_attributes_are_bounded(void)
{
    keel_rand_t r;
    keel_rand_seed(&r, 7);
    keel_trace_ctx_t c;
    keel_trace_new_root(&r, 1, &c);
    keel_span_t s;
    char longname[400];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    keel_span_init(&s, &c, KEEL_SPAN_KIND_CLIENT, "svc", longname, 0);
    KT_EQ_INT(strlen(keel_span_name(&s)), KEEL_SPAN_NAME_BYTES_MAX - 1);
    int i = 0;
    while (keel_span_set_attr(&s, "k", "v") == 0)
        i++;
    KT_EQ_INT(i, KEEL_SPAN_ATTRS_MAX);
    keel_span_t t;
    keel_span_init(&t, &c, KEEL_SPAN_KIND_CLIENT, "svc", "op", 0);
    char big[1500];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    KT_EQ_INT(keel_span_set_attr(&t, "a", big), 0);
    KT_EQ_INT(keel_span_set_attr(&t, "b", big), KEEL_EFULL); /* text space is used up */
    KT_EQ_INT(t.attrs_len, 1);
    KT_CHECK(keel_span_attr(&t, "b") == NULL);
    KT_EQ_INT(strlen(keel_span_attr(&t, "a")), sizeof(big) - 1);
    /* a buffer too small leaves it unchanged */
    keel_buf_t b;
    keel_buf_init(&b, 100);
    keel_buf_append_str(&b, "[");
    KT_EQ_INT(keel_span_to_zipkin_json(&t, &b), KEEL_ETOOBIG);
    KT_EQ_INT(keel_buf_unread(&b), 1);
    keel_buf_free(&b);
}

int main(void)
{
    KT_RUN(parses_and_formats_a_w3c_traceparent);
    KT_RUN(rejects_invalid_traceparents);
    KT_RUN(accepts_b3_multi_headers);
    KT_RUN(rejects_bad_b3_multi_headers);
    KT_RUN(accepts_the_single_b3_header);
    KT_RUN(children_keep_the_trace_and_point_at_their_parent);
    KT_RUN(random_contexts_round_trip_and_mutations_never_crash);
    KT_RUN(renders_a_span_as_zipkin_v2_json);
    KT_RUN(a_client_span_names_its_remote_endpoint);
    KT_RUN(a_root_span_without_duration_or_tags_omits_them);
    KT_RUN(span_attributes_are_bounded);
    return kt_done();
}
