/* test_kv_util.h - helpers for the kv tests: run a command line through apply or read. */
#ifndef KEEL_TESTS_TEST_KV_UTIL_H
#define KEEL_TESTS_TEST_KV_UTIL_H

#include "base/buf.h"
#include "core/kv.h"
#include "ktest.h"

#include <stdlib.h>
#include <string.h>

#define KVT_ARGS_MAX 64

typedef struct kvt {
    keel_kv_t kv;
    uint64_t index;
    keel_buf_t entry;
    keel_buf_t reply;
    char text[1 << 16];
} kvt_t;

static inline void kvt_init(kvt_t *t, const keel_kv_config_t *cfg)
{
    int rc = keel_kv_init(&t->kv, cfg);
    if (rc != 0)
        abort();
    t->index = 0;
    keel_buf_init(&t->entry, 0);
    keel_buf_init(&t->reply, 0);
}

static inline void kvt_free(kvt_t *t)
{
    keel_kv_free(&t->kv);
    keel_buf_free(&t->entry);
    keel_buf_free(&t->reply);
}

/* Splits on single spaces (no quoting: tests needing odd bytes use kvt_argv). */
static inline int kvt_split(const char *line, const uint8_t **argv, size_t *lens)
{
    int argc = 0;
    const char *p = line;
    while (*p) {
        const char *s = strchr(p, ' ');
        size_t n = s ? (size_t)(s - p) : strlen(p);
        if (argc == KVT_ARGS_MAX)
            abort();
        argv[argc] = (const uint8_t *)p;
        lens[argc++] = n;
        p += n;
        if (*p == ' ')
            p++;
    }
    return argc;
}

/* Writes go through encode + apply at the next index; reads through keel_kv_read. */
static inline const char *kvt_argv(kvt_t *t, int argc, const uint8_t *const *argv,
                                   const size_t *lens)
{
    keel_buf_reset(&t->reply);
    unsigned flags = keel_kv_command_flags(argv[0], lens[0]);
    int rc;
    if (flags == KEEL_KV_READ) {
        rc = keel_kv_read(&t->kv, argc, argv, lens, &t->reply);
    } else {
        keel_buf_reset(&t->entry);
        rc = keel_kv_entry_encode(&t->entry, 1000 + t->index, argc, argv, lens);
        if (rc != 0)
            abort();
        rc = keel_kv_apply(&t->kv, ++t->index, keel_buf_rptr(&t->entry), keel_buf_unread(&t->entry),
                           &t->reply);
    }
    if (rc != 0 || keel_buf_unread(&t->reply) >= sizeof(t->text))
        return "(apply/read failed)";
    memcpy(t->text, keel_buf_rptr(&t->reply), keel_buf_unread(&t->reply));
    t->text[keel_buf_unread(&t->reply)] = '\0';
    return t->text;
}

static inline const char *kvt(kvt_t *t, const char *line)
{
    const uint8_t *argv[KVT_ARGS_MAX];
    size_t lens[KVT_ARGS_MAX];
    int argc = kvt_split(line, argv, lens);
    return kvt_argv(t, argc, argv, lens);
}

/* Applies `line` as an entry proposed at time_ms; returns the reply as text. */
static inline const char *kvt_at(kvt_t *x, uint64_t time_ms, const char *line)
{
    const uint8_t *argv[KVT_ARGS_MAX];
    size_t lens[KVT_ARGS_MAX];
    int argc = kvt_split(line, argv, lens);
    keel_buf_reset(&x->entry);
    keel_buf_reset(&x->reply);
    if (keel_kv_entry_encode(&x->entry, time_ms, argc, argv, lens) != 0)
        abort();
    int rc = keel_kv_apply(&x->kv, ++x->index, keel_buf_rptr(&x->entry), keel_buf_unread(&x->entry),
                           &x->reply);
    if (rc != 0 || keel_buf_unread(&x->reply) >= sizeof(x->text))
        return "(apply failed)";
    memcpy(x->text, keel_buf_rptr(&x->reply), keel_buf_unread(&x->reply));
    x->text[keel_buf_unread(&x->reply)] = '\0';
    return x->text;
}

/* Runs a read `line` as of now_ms; returns the reply as text. */
static inline const char *kvt_read_at(kvt_t *x, uint64_t now_ms, const char *line)
{
    const uint8_t *argv[KVT_ARGS_MAX];
    size_t lens[KVT_ARGS_MAX];
    int argc = kvt_split(line, argv, lens);
    keel_buf_reset(&x->reply);
    int rc = keel_kv_read_at(&x->kv, now_ms, argc, argv, lens, &x->reply);
    if (rc != 0 || keel_buf_unread(&x->reply) >= sizeof(x->text))
        return "(read failed)";
    memcpy(x->text, keel_buf_rptr(&x->reply), keel_buf_unread(&x->reply));
    x->text[keel_buf_unread(&x->reply)] = '\0';
    return x->text;
}

#endif
