/* test_resp3.c - RESP2 replies rendered as RESP3 by shape (proto/resp3). */
#include "base/buf.h"
#include "base/err.h"
#include "proto/resp3.h"
#include "ktest.h"

#include <string.h>

/* Renders in with shape; checks the result is want (or the error rc, nothing written). */
static void check(const char *in, keel_resp3_shape_t shape, const char *want, int rc)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_resp3_convert((const uint8_t *)in, strlen(in), shape, &b), rc);
    size_t n = keel_buf_unread(&b);
    KT_EQ_INT(n, strlen(want));
    if (n)
        KT_EQ_MEM(keel_buf_rptr(&b), want, n);
    keel_buf_free(&b);
}

static void nulls_become_the_resp3_null_in_every_shape(void)
{
    for (int s = 0; s < KEEL_RESP3_SHAPES; s++) {
        check("$-1\r\n", (keel_resp3_shape_t)s, "_\r\n", 0);
        check("*-1\r\n", (keel_resp3_shape_t)s, "_\r\n", 0);
        check("-ERR no\r\n", (keel_resp3_shape_t)s, "-ERR no\r\n", 0);
    }
    check("*3\r\n$1\r\na\r\n$-1\r\n*-1\r\n", KEEL_RESP3_PLAIN, "*3\r\n$1\r\na\r\n_\r\n_\r\n", 0);
}

static void maps_sets_doubles_and_pairs(void)
{
    check("*4\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n$-1\r\n", KEEL_RESP3_MAP,
          "%2\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n_\r\n", 0);
    check("*3\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n", KEEL_RESP3_MAP,
          "*3\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n", 0); /* odd: not a map, plainly */
    check("*2\r\n$1\r\na\r\n$1\r\nb\r\n", KEEL_RESP3_SET, "~2\r\n$1\r\na\r\n$1\r\nb\r\n", 0);
    check("$4\r\n-inf\r\n", KEEL_RESP3_DOUBLE, ",-inf\r\n", 0);
    check("*2\r\n$3\r\n1.5\r\n$-1\r\n", KEEL_RESP3_DOUBLES, "*2\r\n,1.5\r\n_\r\n", 0);
    check("*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n", KEEL_RESP3_PAIRS_DOUBLE,
          "*2\r\n*2\r\n$1\r\na\r\n,1\r\n*2\r\n$1\r\nb\r\n,2\r\n", 0);
    check("*2\r\n$1\r\na\r\n$1\r\n1\r\n", KEEL_RESP3_PAIRS, "*1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n",
          0);
    check("*2\r\n$1\r\na\r\n$1\r\n1\r\n", KEEL_RESP3_PAIR_DOUBLE, "*2\r\n$1\r\na\r\n,1\r\n", 0);
    check("*3\r\n$1\r\nk\r\n$1\r\na\r\n$1\r\n1\r\n", KEEL_RESP3_LAST_DOUBLE,
          "*3\r\n$1\r\nk\r\n$1\r\na\r\n,1\r\n", 0);
    check("*2\r\n$1\r\nk\r\n*1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n", KEEL_RESP3_KEYED_PAIRS_DOUBLE,
          "*2\r\n$1\r\nk\r\n*1\r\n*2\r\n$1\r\na\r\n,1\r\n", 0);
}

static void keyed_verbatim_push_and_nested_maps(void)
{
    /* XREAD: [[stream, entries]] -> {stream: entries} */
    check("*1\r\n*2\r\n$1\r\ns\r\n*0\r\n", KEEL_RESP3_KEYED, "%1\r\n$1\r\ns\r\n*0\r\n", 0);
    check("*1\r\n*3\r\n$1\r\ns\r\n*0\r\n:1\r\n", KEEL_RESP3_KEYED,
          "*1\r\n*3\r\n$1\r\ns\r\n*0\r\n:1\r\n", 0); /* not pairs: plainly */
    check("$2\r\nhi\r\n", KEEL_RESP3_VERBATIM, "=6\r\ntxt:hi\r\n", 0);
    check("*1\r\n:1\r\n*1\r\n:2\r\n", KEEL_RESP3_PUSH, ">1\r\n:1\r\n>1\r\n:2\r\n", 0);
    check("*1\r\n*2\r\n$1\r\na\r\n:1\r\n", KEEL_RESP3_ARRAY_OF_MAPS,
          "*1\r\n%1\r\n$1\r\na\r\n:1\r\n", 0);
    check("*2\r\n$3\r\nget\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n", KEEL_RESP3_MAP_OF_MAPS,
          "%1\r\n$3\r\nget\r\n%1\r\n$1\r\nx\r\n$1\r\ny\r\n", 0);
}

static void malformed_input_writes_nothing(void)
{
    check("*2\r\n$1\r\na\r\n", KEEL_RESP3_MAP, "", KEEL_EPROTO); /* truncated */
    check("$3\r\nab\r\n", KEEL_RESP3_PLAIN, "", KEEL_EPROTO);    /* short payload */
    check("*-2\r\n", KEEL_RESP3_PLAIN, "", KEEL_EPROTO);         /* only -1 is a null */
    check("?1\r\n", KEEL_RESP3_PLAIN, "", KEEL_EPROTO);          /* not a RESP2 type */
    check(":1\r\n", KEEL_RESP3_SHAPES, "", KEEL_EINVAL);
    char deep[4 * (KEEL_RESP3_DEPTH_MAX + 2) + 8] = "";
    for (int i = 0; i < KEEL_RESP3_DEPTH_MAX + 2; i++)
        strcat(deep, "*1\r\n");
    strcat(deep, ":1\r\n");
    check(deep, KEEL_RESP3_PLAIN, "", KEEL_EPROTO);
}

int main(void)
{
    KT_RUN(nulls_become_the_resp3_null_in_every_shape);
    KT_RUN(maps_sets_doubles_and_pairs);
    KT_RUN(keyed_verbatim_push_and_nested_maps);
    KT_RUN(malformed_input_writes_nothing);
    return kt_done();
}
