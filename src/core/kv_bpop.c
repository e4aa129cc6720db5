/* kv_bpop.c - what a server needs to block a pop, for every type that has blocking pops
   (lists, sorted sets). See kv.h, "blocking pops". */
#include "core/kv_cmd_int.h"

#include "base/num.h"

#include <string.h>

int keel_kv_bpop_parse(int argc, const uint8_t *const *argv, const size_t *lens,
                       keel_kv_bpop_t *out)
{
    if (argc < 1)
        return 0;
    int rc = keel__zs_bpop_parse(argc, argv, lens, out);
    if (rc >= 0)
        return rc;
    return keel__kvl_bpop_parse(argc, argv, lens, out);
}

int64_t keel_kv_bpop_avail(const keel_kv_t *kv, uint64_t now_ms, const keel_kv_bpop_t *b,
                           const uint8_t *key, size_t len)
{
    if (now_ms < kv->time_ms)
        now_ms = kv->time_ms;
    const keel__kv_entry_t *e = keel__kv_find(kv, key, len, keel__kv_hash(kv, key, len), NULL);
    if (e == NULL || !keel__kv_alive(kv, e, now_ms))
        return 0;
    if (e->type != b->type)
        return -1;
    switch (b->type) {
    case KEEL__KV_TYPE_LIST:
        return (int64_t)keel__kvl_len(keel__kv_obj(e));
    case KEEL__KV_TYPE_ZSET:
        return (int64_t)keel__zs_len(keel__kv_obj(e));
    default:
        return -1;
    }
}

size_t keel_kv_bpop_served(const keel_kv_bpop_t *b, int argc, const uint8_t *const *argv,
                           const size_t *lens, size_t key_i, const uint8_t **out_argv,
                           size_t *out_lens, char *num)
{
    static const uint8_t zero[] = "0", one[] = "1", left[] = "LEFT", right[] = "RIGHT",
                         min[] = "MIN", max[] = "MAX", count[] = "COUNT";
#define WORD(w) (out_argv[n] = (w), out_lens[n++] = sizeof(w) - 1)
    size_t n = 0;
    switch (b->kind) {
    case KEEL_KV_BPOP_POP: /* BLPOP key 0, BZPOPMIN key 0 */
        out_argv[n] = argv[0], out_lens[n++] = lens[0];
        out_argv[n] = argv[key_i], out_lens[n++] = lens[key_i];
        WORD(zero);
        break;
    case KEEL_KV_BPOP_MOVE: /* as it is, the timeout 0 */
        for (int i = 0; i < argc; i++) {
            out_argv[n] = argv[i];
            out_lens[n++] = lens[i];
        }
        out_argv[b->timeout_i] = zero;
        out_lens[b->timeout_i] = 1;
        break;
    case KEEL_KV_BPOP_MPOP: /* BLMPOP 0 1 key LEFT|RIGHT COUNT n, BZMPOP 0 1 key MIN|MAX ... */
        out_argv[n] = argv[0], out_lens[n++] = lens[0];
        WORD(zero);
        WORD(one);
        out_argv[n] = argv[key_i], out_lens[n++] = lens[key_i];
        if (b->type == KEEL__KV_TYPE_ZSET) {
            if (b->left)
                WORD(min);
            else
                WORD(max);
        } else if (b->left) {
            WORD(left);
        } else {
            WORD(right);
        }
        WORD(count);
        out_argv[n] = (const uint8_t *)num;
        out_lens[n++] = keel_fmt_u64(num, b->count);
        break;
    default:
        break;
    }
#undef WORD
    return n;
}

int keel_kv_bpop_is_zset(const keel_kv_bpop_t *b)
{
    return b->type == KEEL__KV_TYPE_ZSET;
}
