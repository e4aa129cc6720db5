/* test_blockmem.c - log block memory: reuse, bounds, and absence from fork children. */
#include "runtime/blockmem.h"
#include "ktest.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCK (256u * 1024u)

static void released_standard_blocks_are_reused_up_to_the_spare_limit(void)
{
    keel_blockmem_t *bm;
    KT_EQ_INT(keel_blockmem_new(&bm, BLOCK, 2 * BLOCK), 0);
    void *b[3];
    for (int i = 0; i < 3; i++) {
        b[i] = keel_blockmem_alloc(bm, BLOCK);
        KT_CHECK(b[i] != NULL);
        memset(b[i], i + 1, BLOCK); /* writable to the last byte */
    }
    keel_blockmem_stats_t st;
    keel_blockmem_get_stats(bm, &st);
    KT_EQ_INT((int)st.maps, 3);
    KT_EQ_INT((int)st.live_bytes, 3 * BLOCK);
    for (int i = 0; i < 3; i++)
        keel_blockmem_release(bm, b[i], BLOCK);
    keel_blockmem_get_stats(bm, &st);
    KT_EQ_INT((int)st.spare_n, 2); /* the third went back to the kernel */
    KT_EQ_INT((int)st.unmaps, 1);
    KT_EQ_INT((int)st.live_bytes, 0);
    void *again = keel_blockmem_alloc(bm, BLOCK);
    KT_CHECK(again == b[1] || again == b[0]);
    keel_blockmem_get_stats(bm, &st);
    KT_EQ_INT((int)st.reused, 1);
    KT_EQ_INT((int)st.maps, 3);
    keel_blockmem_release(bm, again, BLOCK);
    keel_blockmem_free(bm);
}

static void other_sizes_are_mapped_and_unmapped_each_time(void)
{
    keel_blockmem_t *bm;
    KT_EQ_INT(keel_blockmem_new(&bm, BLOCK, 8 * BLOCK), 0);
    size_t sizes[] = {1, 4095, 4097, BLOCK + 1, 3 * BLOCK};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *p = keel_blockmem_alloc(bm, sizes[i]);
        KT_CHECK(p != NULL);
        p[0] = 1;
        p[sizes[i] - 1] = 2;
        keel_blockmem_release(bm, p, sizes[i]);
    }
    keel_blockmem_stats_t st;
    keel_blockmem_get_stats(bm, &st);
    KT_EQ_INT((int)st.maps, 5);
    KT_EQ_INT((int)st.unmaps, 5);
    KT_EQ_INT((int)st.spare_n, 0);
    keel_blockmem_free(bm);
}

/* The snapshot child must never need a log block: it does not have them. */
static void a_fork_child_does_not_inherit_blocks(void)
{
    keel_blockmem_t *bm;
    KT_EQ_INT(keel_blockmem_new(&bm, BLOCK, BLOCK), 0);
    volatile uint8_t *p = keel_blockmem_alloc(bm, BLOCK);
    KT_CHECK(p != NULL);
    p[100] = 42;
    pid_t pid = fork();
    KT_CHECK(pid >= 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        _exit(p[100] == 42 ? 0 : 1); /* faults: the mapping is absent here */
    }
    int status = 0;
    KT_EQ_INT((int)waitpid(pid, &status, 0), (int)pid);
    KT_CHECK(WIFSIGNALED(status));
    KT_EQ_INT(WTERMSIG(status), SIGSEGV);
    KT_EQ_INT(p[100], 42); /* the parent still has it */
    keel_blockmem_release(bm, (void *)p, BLOCK);
    keel_blockmem_free(bm);
}

int main(void)
{
    KT_RUN(released_standard_blocks_are_reused_up_to_the_spare_limit);
    KT_RUN(other_sizes_are_mapped_and_unmapped_each_time);
    KT_RUN(a_fork_child_does_not_inherit_blocks);
    return kt_done();
}
