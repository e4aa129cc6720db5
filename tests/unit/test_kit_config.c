/* test_kit_config.c - the kit's settings: one precedence rule (default < file < environment
 * < flag), the same parser and the source named in every error, nothing half applied. */
#include "kit/config.h"
#include "ktest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct settings {
    const char *listen, *registry;
    int64_t ttl;
    bool verbose;
    keel_opt_t opts[4];
} settings_t;

static void defaults(settings_t *s)
{
    memset(s, 0, sizeof(*s));
    s->listen = "127.0.0.1:8080";
    s->ttl = 5000;
    s->opts[0] = (keel_opt_t){"listen", KEEL_OPT_STR, &s->listen, 0, 0, "where to serve"};
    s->opts[1] = (keel_opt_t){"registry", KEEL_OPT_STR, &s->registry, 0, 0, "keel server"};
    s->opts[2] = (keel_opt_t){"ttl-ms", KEEL_OPT_INT, &s->ttl, 100, 600000, "registration TTL"};
    s->opts[3] = (keel_opt_t){"verbose", KEEL_OPT_BOOL, &s->verbose, 0, 0, "more logs"};
}

static char path[64];

static void write_file(const char *text)
{
    snprintf(path, sizeof(path), "/tmp/keel-test-config-%d.yaml", (int)getpid());
    FILE *f = fopen(path, "w");
    KT_CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static int load(settings_t *s, keel_config_t *cfg, int argc, char **argv, char **envp,
                keel_errmsg_t *msg)
{
    return keel_config_load(cfg, "svc", "SVC", s->opts, 4, argc, argv, envp, msg);
}

static void a_later_source_wins(void)
{
    settings_t s;
    keel_config_t cfg;
    keel_errmsg_t msg;
    /* defaults alone */
    defaults(&s);
    char *none[] = {"svc", NULL};
    char *noenv[] = {NULL};
    KT_EQ_INT(load(&s, &cfg, 1, none, noenv, &msg), 0);
    KT_CHECK(strcmp(s.listen, "127.0.0.1:8080") == 0 && s.registry == NULL && s.ttl == 5000);
    KT_EQ_INT(cfg.from[0], KEEL_OPT_FROM_DEFAULT);
    keel_config_free(&cfg);

    /* file < environment < flag, setting by setting */
    write_file("# a comment\nlisten: 0.0.0.0:9000\nttl-ms: 3000\nregistry: \"a:1,b:2\"\n"
               "verbose: yes\n");
    char cfgflag[96];
    snprintf(cfgflag, sizeof(cfgflag), "--config=%s", path);
    char *argv[] = {"svc", cfgflag, "--ttl-ms", "700", NULL};
    char *envp[] = {"PATH=/bin", "SVC_TTL_MS=900", "SVC_LISTEN=127.0.0.2:1", NULL};
    defaults(&s);
    KT_EQ_INT(load(&s, &cfg, 4, argv, envp, &msg), 0);
    KT_CHECK(strcmp(s.listen, "127.0.0.2:1") == 0); /* environment over file */
    KT_EQ_INT(s.ttl, 700);                          /* flag over environment over file */
    KT_CHECK(strcmp(s.registry, "a:1,b:2") == 0);   /* file over default */
    KT_CHECK(s.verbose);
    KT_EQ_INT(cfg.from[0], KEEL_OPT_FROM_ENV);
    KT_EQ_INT(cfg.from[1], KEEL_OPT_FROM_FILE);
    KT_EQ_INT(cfg.from[2], KEEL_OPT_FROM_FLAG);
    keel_config_free(&cfg);

    /* the file named by the environment; a boolean flag alone means true, =false false */
    char envcfg[96];
    snprintf(envcfg, sizeof(envcfg), "SVC_CONFIG=%s", path);
    char *envp2[] = {envcfg, NULL};
    char *argv2[] = {"svc", "--verbose=false", "--listen=x:1", NULL};
    defaults(&s);
    KT_EQ_INT(load(&s, &cfg, 3, argv2, envp2, &msg), 0);
    KT_EQ_INT(s.ttl, 3000);
    KT_CHECK(!s.verbose && strcmp(s.listen, "x:1") == 0);
    keel_config_free(&cfg);
    char *argv3[] = {"svc", "--verbose", NULL};
    defaults(&s);
    KT_EQ_INT(load(&s, &cfg, 2, argv3, noenv, &msg), 0);
    KT_CHECK(s.verbose);
    keel_config_free(&cfg);
    unlink(path);
}

static void expect_error(int argc, char **argv, char **envp, const char *want)
{
    settings_t s;
    keel_config_t cfg;
    keel_errmsg_t msg = {{0}};
    defaults(&s);
    int rc = load(&s, &cfg, argc, argv, envp, &msg);
    KT_CHECK(rc < 0);
    if (strstr(msg.text, want) == NULL)
        KT_FAIL("error '%s' does not say '%s'", msg.text, want);
    /* nothing half applied */
    KT_CHECK(strcmp(s.listen, "127.0.0.1:8080") == 0 && s.ttl == 5000 && !s.verbose);
}

static void errors_name_their_source(void)
{
    char *noenv[] = {NULL};
    expect_error(3, (char *[]){"svc", "--ttl-ms", "abc", NULL}, noenv,
                 "flag --ttl-ms 'abc': expected an integer in 100..600000");
    expect_error(3, (char *[]){"svc", "--ttl-ms", "99", NULL}, noenv, "100..600000");
    expect_error(2, (char *[]){"svc", "--ttl-ms", NULL}, noenv, "flag --ttl-ms needs a value");
    expect_error(2, (char *[]){"svc", "--nope", NULL}, noenv, "unknown flag '--nope'");
    expect_error(2, (char *[]){"svc", "stray", NULL}, noenv, "unexpected argument 'stray'");
    expect_error(2, (char *[]){"svc", "--verbose=maybe", NULL}, noenv,
                 "flag --verbose 'maybe': expected true or false");
    expect_error(1, (char *[]){"svc", NULL}, (char *[]){"SVC_TTL_MS=1e3", NULL},
                 "environment SVC_TTL_MS '1e3'");
    /* the file: line numbers, unknown and repeated names, structure */
    char cfgflag[96];
    write_file("listen: a:1\n\nttl-ms: lots\n");
    snprintf(cfgflag, sizeof(cfgflag), "--config=%s", path);
    /* the listen from the file is not applied either: the error stops everything */
    expect_error(2, (char *[]){"svc", cfgflag, NULL}, noenv, ":3: ttl-ms 'lots'");
    write_file("listen: a:1\nlisten: b:2\n");
    expect_error(2, (char *[]){"svc", cfgflag, NULL}, noenv, ":2: listen given twice");
    write_file("lisen: a:1\n");
    expect_error(2, (char *[]){"svc", cfgflag, NULL}, noenv, ":1: no setting named 'lisen'");
    write_file("listen:\n  host: a\n");
    expect_error(2, (char *[]){"svc", cfgflag, NULL}, noenv, ":2: settings are flat");
    write_file("listen: [a, b]\n");
    expect_error(2, (char *[]){"svc", cfgflag, NULL}, noenv, "scalars");
    write_file("listen: \"unterminated\n");
    expect_error(2, (char *[]){"svc", cfgflag, NULL}, noenv, path);
    unlink(path);
    expect_error(2, (char *[]){"svc", cfgflag, NULL}, noenv, "cannot open it");
}

static void help_and_print_config(void)
{
    settings_t s;
    keel_config_t cfg;
    keel_errmsg_t msg;
    defaults(&s);
    /* --help wins over a bad flag next to it */
    char *argv[] = {"svc", "--ttl-ms", "abc", "--help", NULL};
    fflush(stdout);
    KT_EQ_INT(load(&s, &cfg, 4, argv, (char *[]){NULL}, &msg), 1);
    keel_config_free(&cfg);
    char *argv2[] = {"svc", "--print-config", "--ttl-ms", "200", NULL};
    KT_EQ_INT(load(&s, &cfg, 4, argv2, (char *[]){NULL}, &msg), 1);
    KT_EQ_INT(s.ttl, 200);
    keel_config_free(&cfg);
    /* a bad table is refused */
    defaults(&s);
    s.opts[3].name = "listen";
    KT_CHECK(load(&s, &cfg, 1, (char *[]){"svc", NULL}, (char *[]){NULL}, &msg) < 0);
    KT_CHECK(strstr(msg.text, "named twice") != NULL);
}

int main(void)
{
    KT_RUN(a_later_source_wins);
    KT_RUN(errors_name_their_source);
    KT_RUN(help_and_print_config);
    return kt_done();
}
