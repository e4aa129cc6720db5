/* retain.c - the retention sweeps' shared page (tx/retain.h). */
#include "tx/retain.h"

#include <stdio.h>
#include <string.h>

void keel_retain_due_args(keel_args_t *a, const char *index, int64_t due_ms)
{
    char max[24];
    snprintf(max, sizeof(max), "%lld", (long long)due_ms);
    keel_args_strs(a, 4, (const char *[]){"ZRANGEBYSCORE", index, "-inf", max});
    keel_args_strs(a, 2, (const char *[]){"LIMIT", "0"});
    keel_args_u64(a, KEEL_RETAIN_PAGE);
}

/* An index member that names a log key: prefix, the id and ":log" fit key_bytes_max. */
static int id_ok(const keel_resp_value_t *id, size_t prefix_len, size_t key_bytes_max)
{
    return id->type == KEEL_RESP_BULK && id->str.len > 0 &&
           prefix_len + id->str.len + 5 <= key_bytes_max;
}

void keel_retain_page_args(keel_args_t *a, const char *index, const char *prefix,
                           const keel_resp_value_t *ids, size_t key_bytes_max)
{
    size_t pl = strlen(prefix), n = 0;
    char key[512];
    if (key_bytes_max > sizeof(key))
        key_bytes_max = sizeof(key);
    for (size_t i = 0; i < ids->elems_len; i++)
        n += id_ok(&ids->elems[i], pl, key_bytes_max);
    keel_args_strs(a, 3, (const char *[]){"KEEL.TXN", "0", "2"});
    keel_args_u64(a, n + 1);
    keel_args_str(a, "UNLINK");
    for (size_t i = 0; i < ids->elems_len; i++) {
        const keel_resp_value_t *id = &ids->elems[i];
        if (!id_ok(id, pl, key_bytes_max))
            continue;
        snprintf(key, sizeof(key), "%s%.*s:log", prefix, (int)id->str.len, id->str.ptr);
        keel_args_str(a, key);
    }
    keel_args_u64(a, (uint64_t)ids->elems_len + 2); /* the index loses every member read */
    keel_args_strs(a, 2, (const char *[]){"ZREM", index});
    for (size_t i = 0; i < ids->elems_len; i++)
        if (ids->elems[i].type == KEEL_RESP_BULK)
            keel_args_add(a, ids->elems[i].str.ptr, ids->elems[i].str.len);
        else
            keel_args_str(a, "-"); /* not an id: removes nothing, keeps the count */
}
