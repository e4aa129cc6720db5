/* blockmem.c - memory blocks mapped outside the heap, reused, not inherited by fork children. */
#include "runtime/blockmem.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels answer EINVAL and fault instead */
#endif

typedef struct spare {
    struct spare *next;
} spare_t;

struct keel_blockmem {
    size_t page, block; /* page size, standard block size (whole pages) */
    size_t spare_max;   /* blocks the spare list may hold */
    spare_t *spares;
    keel_blockmem_stats_t st;
};

static size_t round_up(size_t n, size_t page)
{
    return (n + page - 1) / page * page;
}

int keel_blockmem_new(keel_blockmem_t **out, size_t block_bytes, size_t spare_bytes_max)
{
    long page = sysconf(_SC_PAGESIZE);
    keel_blockmem_t *bm = calloc(1, sizeof(*bm));
    if (bm == NULL)
        return KEEL_ENOMEM;
    bm->page = page > 0 ? (size_t)page : 4096u;
    bm->block = round_up(block_bytes ? block_bytes : 1, bm->page);
    bm->spare_max = spare_bytes_max / bm->block;
    *out = bm;
    return 0;
}

void keel_blockmem_free(keel_blockmem_t *bm)
{
    if (bm == NULL)
        return;
    while (bm->spares != NULL) {
        spare_t *s = bm->spares;
        bm->spares = s->next;
        munmap(s, bm->block);
    }
    free(bm);
}

void *keel_blockmem_alloc(void *data, size_t bytes)
{
    keel_blockmem_t *bm = data;
    size_t len = round_up(bytes ? bytes : 1, bm->page);
    if (len == bm->block && bm->spares != NULL) {
        spare_t *s = bm->spares;
        bm->spares = s->next;
        bm->st.spare_n--;
        bm->st.reused++;
        bm->st.live_bytes += len;
        return s;
    }
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (madvise(p, len, MADV_DONTFORK) != 0) { /* a child must not share it: no COW faults */
        munmap(p, len);
        return NULL;
    }
    (void)madvise(p, len, MADV_POPULATE_WRITE); /* best effort: one call, not len/page faults */
    bm->st.maps++;
    bm->st.live_bytes += len;
    return p;
}

void keel_blockmem_release(void *data, void *block, size_t bytes)
{
    keel_blockmem_t *bm = data;
    if (block == NULL)
        return;
    size_t len = round_up(bytes ? bytes : 1, bm->page);
    bm->st.live_bytes -= len;
    if (len == bm->block && bm->st.spare_n < bm->spare_max) {
        spare_t *s = block;
        s->next = bm->spares;
        bm->spares = s;
        bm->st.spare_n++;
        return;
    }
    munmap(block, len);
    bm->st.unmaps++;
}

void keel_blockmem_get_stats(const keel_blockmem_t *bm, keel_blockmem_stats_t *out)
{
    *out = bm->st;
}
