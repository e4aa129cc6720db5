/* args.c - a command's arguments in one growable buffer (args.h). */
#include "client/args.h"

#include "base/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void keel_args_init(keel_args_t *a, size_t args_max, size_t bytes_max)
{
    memset(a, 0, sizeof(*a));
    keel_buf_init(&a->bytes, bytes_max);
    a->args_max = args_max ? args_max : 1;
}

void keel_args_free(keel_args_t *a)
{
    keel_buf_free(&a->bytes);
    free(a->offs);
    free(a->lens);
    free((void *)a->ptrs);
    a->offs = a->lens = NULL;
    a->ptrs = NULL;
    a->n = a->cap = 0;
}

void keel_args_reset(keel_args_t *a)
{
    a->n = 0;
    a->err = 0;
    keel_buf_reset(&a->bytes);
}

static int grow(keel_args_t *a)
{
    if (a->n == a->args_max)
        return KEEL_ETOOBIG;
    size_t cap = a->cap ? a->cap * 2 : 16;
    if (cap > a->args_max)
        cap = a->args_max;
    size_t *offs = realloc(a->offs, cap * sizeof(*offs));
    if (offs == NULL)
        return KEEL_ENOMEM;
    a->offs = offs;
    size_t *lens = realloc(a->lens, cap * sizeof(*lens));
    if (lens == NULL)
        return KEEL_ENOMEM;
    a->lens = lens;
    const char **ptrs = realloc((void *)a->ptrs, cap * sizeof(*ptrs));
    if (ptrs == NULL)
        return KEEL_ENOMEM;
    a->ptrs = ptrs;
    a->cap = cap;
    return 0;
}

void keel_args_add(keel_args_t *a, const void *p, size_t len)
{
    if (a->err == 0 && a->n == a->cap)
        a->err = grow(a);
    if (a->err != 0)
        return;
    a->offs[a->n] = a->bytes.len;
    a->lens[a->n] = len;
    a->err = len ? keel_buf_append(&a->bytes, p, len) : 0;
    a->n += a->err == 0;
}

void keel_args_str(keel_args_t *a, const char *s)
{
    keel_args_add(a, s, strlen(s));
}

void keel_args_u64(keel_args_t *a, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof(t), "%llu", (unsigned long long)v);
    keel_args_add(a, t, (size_t)n);
}

void keel_args_strs(keel_args_t *a, size_t n, const char *const *strs)
{
    for (size_t i = 0; i < n; i++)
        keel_args_str(a, strs[i]);
}

int keel_args_resolve(keel_args_t *a)
{
    if (a->err != 0)
        return a->err;
    for (size_t i = 0; i < a->n; i++)
        a->ptrs[i] = (const char *)a->bytes.data + a->offs[i];
    return 0;
}
