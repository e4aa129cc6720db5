/* test_appolicy.c - the conflict policy per key prefix of the AP keyspace (src/core/appolicy). */
#include "core/apval.h"
#include "core/appolicy.h"
#include "ktest.h"

#include <stdio.h>
#include <string.h>

static int parse(keel_appolicy_t *p, const char *text, keel_errmsg_t *msg)
{
    return keel_appolicy_parse(p, text, strlen(text), msg);
}

static uint8_t kind(const keel_appolicy_t *p, const char *key, int *rule)
{
    return keel_appolicy_kind(p, key, strlen(key), rule);
}

static void the_longest_matching_prefix_wins(void)
{
    static keel_appolicy_t p;
    keel_errmsg_t msg;
    KT_EQ_INT(parse(&p, "cart:=or-set,cart:hits:=pn-counter,c=lww,cart:hits:x=siblings", &msg), 0);
    KT_EQ_INT(p.n, 4);
    int rule;
    KT_EQ_INT(kind(&p, "cart:42", &rule), KEEL_APVAL_ORSET);
    KT_EQ_INT(rule, 0);
    KT_EQ_INT(kind(&p, "cart:hits:7", &rule), KEEL_APVAL_PNCOUNTER);
    KT_EQ_INT(rule, 1);
    KT_EQ_INT(kind(&p, "cart:hits:x", &rule), KEEL_APVAL_SIBLINGS);
    KT_EQ_INT(rule, 3);
    KT_EQ_INT(kind(&p, "cat", &rule), KEEL_APVAL_LWW);
    KT_EQ_INT(rule, 2);
    /* a key shorter than a prefix, or equal to it, or matching none */
    KT_EQ_INT(kind(&p, "cart", &rule), KEEL_APVAL_LWW);
    KT_EQ_INT(kind(&p, "cart:", &rule), KEEL_APVAL_ORSET);
    KT_EQ_INT(kind(&p, "user:1", &rule), KEEL_APVAL_SIBLINGS);
    KT_EQ_INT(rule, -1);
    KT_EQ_INT(kind(&p, "", &rule), KEEL_APVAL_SIBLINGS);
    KT_EQ_INT(rule, -1);
    /* the order the rules are given in changes nothing */
    static keel_appolicy_t q;
    KT_EQ_INT(parse(&q, "cart:hits:x=siblings,c=lww,cart:hits:=pn-counter,cart:=or-set", &msg), 0);
    const char *keys[] = {"cart:42", "cart:hits:7", "cart:hits:x", "cat", "cart", "user:1", ""};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        KT_EQ_INT(kind(&q, keys[i], NULL), kind(&p, keys[i], NULL));
    KT_EQ_U64(keel_appolicy_digest(&q), keel_appolicy_digest(&p));
    /* keys are bytes: a NUL inside a key and a prefix with '=' in it */
    KT_EQ_INT(parse(&p, "a=b=lww", &msg), 0);
    KT_EQ_INT(p.rule[0].len, 3);
    KT_EQ_INT(keel_appolicy_kind(&p, "a=b\0z", 5, NULL), KEEL_APVAL_LWW);
    KT_EQ_INT(keel_appolicy_kind(&p, "a=\0", 3, NULL), KEEL_APVAL_SIBLINGS);
}

static void no_table_and_the_empty_prefix(void)
{
    static keel_appolicy_t p;
    keel_errmsg_t msg;
    int rule = 7;
    keel_appolicy_init(&p);
    KT_EQ_INT(kind(&p, "anything", &rule), KEEL_APVAL_SIBLINGS);
    KT_EQ_INT(rule, -1);
    KT_EQ_INT(parse(&p, "", &msg), 0);
    KT_EQ_INT(p.n, 0);
    /* the empty prefix matches every key, and a longer one still wins */
    KT_EQ_INT(parse(&p, "=lww,n:=pn-counter", &msg), 0);
    KT_EQ_INT(kind(&p, "", &rule), KEEL_APVAL_LWW);
    KT_EQ_INT(rule, 0);
    KT_EQ_INT(kind(&p, "x", NULL), KEEL_APVAL_LWW);
    KT_EQ_INT(kind(&p, "n:1", NULL), KEEL_APVAL_PNCOUNTER);
    /* different tables, different digests */
    static keel_appolicy_t q;
    KT_EQ_INT(parse(&q, "=lww,n:=or-set", &msg), 0);
    KT_CHECK(keel_appolicy_digest(&q) != keel_appolicy_digest(&p));
    keel_appolicy_init(&q);
    KT_CHECK(keel_appolicy_digest(&q) != keel_appolicy_digest(&p));
    KT_EQ_STR(keel_appolicy_name(KEEL_APVAL_LWW), "lww");
    KT_EQ_STR(keel_appolicy_name(KEEL_APVAL_PNCOUNTER), "pn-counter");
    KT_EQ_STR(keel_appolicy_name(0), "?");
}

static void bad_tables_are_refused_and_leave_it_empty(void)
{
    static keel_appolicy_t p;
    keel_errmsg_t msg;
    const struct {
        const char *text;
        int rc;
        const char *says;
    } bad[] = {
        {"a", KEEL_EINVAL, "not PREFIX=POLICY"},
        {"a=lww,", KEEL_EINVAL, "rule 2"},
        {",a=lww", KEEL_EINVAL, "rule 1"},
        {"a=LWW", KEEL_EINVAL, "policy 'LWW'"},
        {"a=", KEEL_EINVAL, "policy ''"},
        {"a=lww,a=siblings", KEEL_EEXISTS, "given twice"},
        {"a\tb=lww", KEEL_EINVAL, "control byte"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        KT_EQ_INT(parse(&p, "x=lww", &msg), 0);
        KT_EQ_INT(parse(&p, bad[i].text, &msg), bad[i].rc);
        KT_CHECK(strstr(msg.text, bad[i].says) != NULL);
        KT_EQ_INT(p.n, 0);
        KT_EQ_INT(kind(&p, "x", NULL), KEEL_APVAL_SIBLINGS);
    }
}

static void limits_are_named_and_held(void)
{
    static keel_appolicy_t p;
    static char text[KEEL_APPOLICY_TEXT_BYTES_MAX + 2];
    keel_errmsg_t msg;
    /* a prefix of exactly the limit is taken, one byte more is refused */
    char prefix[KEEL_APPOLICY_PREFIX_BYTES_MAX + 2];
    memset(prefix, 'k', sizeof(prefix));
    prefix[KEEL_APPOLICY_PREFIX_BYTES_MAX] = 0;
    snprintf(text, sizeof(text), "%s=lww", prefix);
    KT_EQ_INT(parse(&p, text, &msg), 0);
    KT_EQ_INT(p.rule[0].len, KEEL_APPOLICY_PREFIX_BYTES_MAX);
    prefix[KEEL_APPOLICY_PREFIX_BYTES_MAX] = 'k';
    prefix[KEEL_APPOLICY_PREFIX_BYTES_MAX + 1] = 0;
    snprintf(text, sizeof(text), "%s=lww", prefix);
    KT_EQ_INT(parse(&p, text, &msg), KEEL_ETOOBIG);
    KT_EQ_INT(p.n, 0);
    /* KEEL_APPOLICY_PREFIXES_MAX rules of the longest kind fit in the text limit */
    size_t len = 0;
    prefix[KEEL_APPOLICY_PREFIX_BYTES_MAX] = 0;
    for (unsigned i = 0; i < KEEL_APPOLICY_PREFIXES_MAX; i++) {
        snprintf(prefix, 5, "%04u", i);
        prefix[4] = 'k';
        len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%s=pn-counter", i ? "," : "",
                                prefix);
    }
    KT_CHECK(len <= KEEL_APPOLICY_TEXT_BYTES_MAX);
    KT_EQ_INT(keel_appolicy_parse(&p, text, len, &msg), 0);
    KT_EQ_INT(p.n, KEEL_APPOLICY_PREFIXES_MAX);
    KT_EQ_INT(keel_appolicy_kind(&p, p.rule[63].prefix, p.rule[63].len, NULL),
              KEEL_APVAL_PNCOUNTER);
    /* one prefix more is refused */
    KT_EQ_INT(parse(&p,
                    "0=lww,1=lww,2=lww,3=lww,4=lww,5=lww,6=lww,7=lww,8=lww,9=lww,a=lww,b=lww,"
                    "c=lww,d=lww,e=lww,f=lww,g=lww,h=lww,i=lww,j=lww,k=lww,l=lww,m=lww,n=lww,"
                    "o=lww,p=lww,q=lww,r=lww,s=lww,t=lww,u=lww,v=lww,w=lww,x=lww,y=lww,z=lww,"
                    "A=lww,B=lww,C=lww,D=lww,E=lww,F=lww,G=lww,H=lww,I=lww,J=lww,K=lww,L=lww,"
                    "M=lww,N=lww,O=lww,P=lww,Q=lww,R=lww,S=lww,T=lww,U=lww,V=lww,W=lww,X=lww,"
                    "Y=lww,Z=lww,_=lww,-=lww",
                    &msg),
              0);
    KT_EQ_INT(p.n, 64);
    KT_EQ_INT(parse(&p,
                    "0=lww,1=lww,2=lww,3=lww,4=lww,5=lww,6=lww,7=lww,8=lww,9=lww,a=lww,b=lww,"
                    "c=lww,d=lww,e=lww,f=lww,g=lww,h=lww,i=lww,j=lww,k=lww,l=lww,m=lww,n=lww,"
                    "o=lww,p=lww,q=lww,r=lww,s=lww,t=lww,u=lww,v=lww,w=lww,x=lww,y=lww,z=lww,"
                    "A=lww,B=lww,C=lww,D=lww,E=lww,F=lww,G=lww,H=lww,I=lww,J=lww,K=lww,L=lww,"
                    "M=lww,N=lww,O=lww,P=lww,Q=lww,R=lww,S=lww,T=lww,U=lww,V=lww,W=lww,X=lww,"
                    "Y=lww,Z=lww,_=lww,-=lww,+=lww",
                    &msg),
              KEEL_ETOOBIG);
    KT_CHECK(strstr(msg.text, "more than 64 prefixes") != NULL);
    KT_EQ_INT(p.n, 0);
    /* a text past its limit is refused before it is read */
    memset(text, 'a', sizeof(text));
    KT_EQ_INT(keel_appolicy_parse(&p, text, KEEL_APPOLICY_TEXT_BYTES_MAX + 1, &msg), KEEL_ETOOBIG);
}

int main(void)
{
    KT_RUN(the_longest_matching_prefix_wins);
    KT_RUN(no_table_and_the_empty_prefix);
    KT_RUN(bad_tables_are_refused_and_leave_it_empty);
    KT_RUN(limits_are_named_and_held);
    return kt_done();
}
