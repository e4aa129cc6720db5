/* kv_list_int.h - what the list type's files (kv_list.c, kv_list_cmd.c, kv_list_block.c) share. */
#ifndef KEEL_CORE_KV_LIST_INT_H
#define KEEL_CORE_KV_LIST_INT_H

#include "core/kv_cmd_int.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The list type is split by job, one file each:
 *   kv_list.c        the deque: its nodes and their encoding, positions, rebuilding, and
 *                    the type's row (free, bytes, snapshot write and load)
 *   kv_list_cmd.c    lookups, argument parsing, and the commands that push, pop, read and
 *                    edit one list (LPUSH ... LPOS)
 *   kv_list_block.c  the commands that move elements or block (LMOVE ... KEEL.BPOP), the
 *                    blocking pops' timeouts, what the server needs to block
 * Functions shared between them are keel__kvl_*, declared at the end of this file.
 *
 * The list is a doubly linked chain of nodes, each a buffer of packed elements (Redis's
 * quicklist of listpacks, in spirit). An element is
 *
 *     varint(len) | len bytes | reversed varint(len)
 *
 * (LEB128; the trailing copy is written back to front), so a node is walked from either
 * end and an element costs its bytes plus 2 bytes up to 127 bytes long. A node's elements
 * sit in data[head, tail) of its cap bytes, with free room on both sides: a push at
 * either end writes into that room, or grows the node (doubling, up to LIST_NODE_BYTES),
 * or starts a new node; a pop moves head or tail and frees a node once it is empty. Both
 * are O(1) amortized. Index walks (LINDEX, LSET, LRANGE's start, LINSERT) skip whole nodes
 * by their counts. Edits inside the list (LSET, LINSERT, LREM) rebuild the nodes they touch
 * into fresh ones, all allocated before anything is unlinked, so a command that cannot get
 * memory changes nothing (KEEL_ENOMEM). The object's bytes are its struct and every
 * node's header and cap: what it holds, not what its elements add up to.
 */
#define LIST_NODE_BYTES 8192u     /* a node's element bytes before a new node starts */
#define LIST_NODE_CAP_MIN 32u     /* a new node's first buffer */
#define VARINT_BYTES_MAX 5u       /* a u32 length */
#define LIST_LEN_MAX (UINT32_MAX) /* elements in one list: LPUSH past it is refused */
#define ERR_LIST_FULL "ERR list exceeds the maximum number of elements"

typedef struct lnode {
    struct lnode *prev, *next;
    uint32_t count, cap, head, tail;
    uint8_t data[];
} lnode_t;

typedef struct klist {
    lnode_t *first, *last;
    uint64_t len;
    size_t bytes;
} klist_t;

#define HEAD 0
#define TAIL 1

/* A position in the list (list_at, front, back), walked with next_fwd and next_bwd. */
typedef struct pos {
    lnode_t *nd;
    uint32_t off; /* forward: the element's start; backward: its end */
} pos_t;

/* A chain of fresh nodes filled in order, each up to LIST_NODE_BYTES of elements. */
typedef struct builder {
    lnode_t *first, *last;
    size_t bytes; /* node bytes */
    size_t left;  /* element bytes still to come (sizes the last node exactly) */
    uint64_t count;
    int oom;
} builder_t;

/* A write's view of a key. */
typedef struct wkey {
    const uint8_t *key;
    size_t len;
    uint64_t h;
    keel__kv_entry_t **link;
    keel__kv_entry_t *e; /* live entry or NULL */
    int dead;
    klist_t *l;          /* e's list, or NULL */
    size_t bytes_before; /* l's bytes when looked up */
} wkey_t;

/* kv_list.c: the deque */
size_t keel__kvl_enc_len(size_t n);
uint32_t keel__kvl_get_fwd(const lnode_t *nd, uint32_t off, const uint8_t **v, size_t *n);
klist_t *keel__kvl_list_new(void);
void keel__kvl_list_free(klist_t *l);
int keel__kvl_list_push(klist_t *l, int where, const uint8_t *v, size_t n);
void keel__kvl_list_peek(const klist_t *l, int where, const uint8_t **v, size_t *n);
void keel__kvl_drop_node(klist_t *l, lnode_t *nd);
void keel__kvl_list_drop(klist_t *l, int where);
pos_t keel__kvl_list_at(const klist_t *l, uint64_t i);
int keel__kvl_next_fwd(pos_t *p, const uint8_t **v, size_t *n);
int keel__kvl_next_bwd(pos_t *p, const uint8_t **v, size_t *n);
pos_t keel__kvl_front(const klist_t *l);
pos_t keel__kvl_back(const klist_t *l);
void keel__kvl_build_add(builder_t *b, const uint8_t *v, size_t n);
void keel__kvl_build_abort(builder_t *b);
void keel__kvl_splice(klist_t *l, lnode_t *a, lnode_t *z, builder_t *b);

/* kv_list_cmd.c: lookups, parsing, replies */
int keel__kvl_write_list(const call_t *c, const uint8_t *key, size_t len, wkey_t *k);
int keel__kvl_link_new(const call_t *c, wkey_t *k, klist_t *l);
klist_t *keel__kvl_list_of(const uint8_t *const *argv, const size_t *lens, size_t n, int where);
void keel__kvl_changed(const call_t *c, wkey_t *k);
int keel__kvl_parse_range(const call_t *c, size_t i, int64_t min, int64_t max, const char *msg,
                          int64_t *v);
int keel__kvl_parse_where(const call_t *c, size_t i, int *where);
void keel__kvl_pop_n(wkey_t *k, int where, uint64_t n, reply_t *o);

#endif
