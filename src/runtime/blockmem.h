/* blockmem.h - memory blocks mapped outside the heap, reused, not inherited by fork children. */
#ifndef KEEL_RUNTIME_BLOCKMEM_H
#define KEEL_RUNTIME_BLOCKMEM_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * For the Raft log's entry data (core/raft/raft.h, keel_raft_mem_t), the largest memory a
 * server writes and frees in bulk. Blocks from the heap had three costs on this kind of
 * machine, where a page fault is expensive (bench/RESULTS.md, "Log blocks"):
 *   - every fresh page faulted on first write (64 faults per 256 KiB block);
 *   - while a snapshot child lived, every heap page the loop wrote was copied on write,
 *     log blocks included, though the child never reads the log;
 *   - fork copied their page tables.
 * So each block is its own mapping: marked MADV_DONTFORK (absent in a fork child: the
 * child must never touch one; the snapshot child reads only the state machine and a copy
 * of the configuration), populated in one MADV_POPULATE_WRITE call instead of page by
 * page, and on release kept on a spare list (up to spare_bytes_max) for the next block of
 * the standard size instead of being unmapped: the log regrows to the same size after
 * every compaction. Larger blocks are unmapped at release.
 * Not thread-safe: one owner thread. ASan does not see inside these blocks (no
 * use-after-free detection for them); tests and the simulator use the core's malloc.
 */
typedef struct keel_blockmem keel_blockmem_t;

typedef struct keel_blockmem_stats {
    uint64_t maps;     /* mmap calls */
    uint64_t unmaps;   /* munmap calls */
    uint64_t reused;   /* allocations served from the spare list */
    size_t spare_n;    /* blocks on the spare list now */
    size_t live_bytes; /* mapped and handed out now */
} keel_blockmem_stats_t;

/* block_bytes: the standard size the spare list keeps (rounded up to whole pages). */
int keel_blockmem_new(keel_blockmem_t **out, size_t block_bytes, size_t spare_bytes_max);
/* Unmaps the spare list. Every block handed out must have been released before. */
void keel_blockmem_free(keel_blockmem_t *bm);
/* At least `bytes` writable bytes, page aligned, or NULL. bm is a keel_blockmem_t. */
void *keel_blockmem_alloc(void *bm, size_t bytes);
/* Gives back a block from alloc with the same `bytes`. */
void keel_blockmem_release(void *bm, void *block, size_t bytes);
void keel_blockmem_get_stats(const keel_blockmem_t *bm, keel_blockmem_stats_t *out);

#endif
