/* test_list.c - the intrusive list: order, removal anywhere, safe iteration, a random model. */
#include "base/list.h"
#include "base/rand.h"
#include "ktest.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct item {
    int id;
    keel_list_t link;
} item_t;

#define ITEMS_MAX 64

/* Writes the ids of head's items, in order, into out; returns how many. */
static size_t ids(const keel_list_t *head, int *out, size_t cap)
{
    size_t n = 0;
    for (keel_list_t *it = keel_list_first(head); it != NULL; it = keel_list_next(head, it)) {
        KT_CHECK(n < cap);
        out[n++] = KEEL_LIST_ENTRY(it, item_t, link)->id;
    }
    return n;
}

static void items_init(item_t *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        items[i].id = (int)i;
        keel_list_init(&items[i].link);
    }
}

static void a_new_list_is_empty_and_has_no_first(void)
{
    keel_list_t head;
    keel_list_init(&head);
    KT_CHECK(keel_list_empty(&head));
    KT_CHECK(keel_list_first(&head) == NULL);
    KT_CHECK(keel_list_last(&head) == NULL);
    static keel_list_t st = KEEL_LIST_INIT(st);
    KT_CHECK(keel_list_empty(&st));
}

static void insert_tail_keeps_order_and_insert_head_reverses_it(void)
{
    keel_list_t head;
    keel_list_init(&head);
    item_t it[4];
    items_init(it, 4);
    keel_list_insert_tail(&head, &it[1].link);
    keel_list_insert_tail(&head, &it[2].link);
    keel_list_insert_head(&head, &it[0].link);
    keel_list_insert_tail(&head, &it[3].link);
    int got[8];
    KT_EQ_INT(ids(&head, got, 8), 4);
    for (int i = 0; i < 4; i++)
        KT_EQ_INT(got[i], i);
    KT_CHECK(!keel_list_empty(&head));
    KT_CHECK(keel_list_first(&head) == &it[0].link);
    KT_CHECK(keel_list_last(&head) == &it[3].link);
    KT_CHECK(keel_list_next(&head, &it[3].link) == NULL);
}

static void removing_first_middle_and_last_leaves_the_rest_in_order(void)
{
    keel_list_t head;
    keel_list_init(&head);
    item_t it[5];
    items_init(it, 5);
    for (int i = 0; i < 5; i++)
        keel_list_insert_tail(&head, &it[i].link);
    keel_list_remove(&it[0].link);
    keel_list_remove(&it[2].link);
    keel_list_remove(&it[4].link);
    int got[8];
    KT_EQ_INT(ids(&head, got, 8), 2);
    KT_EQ_INT(got[0], 1);
    KT_EQ_INT(got[1], 3);
    keel_list_remove(&it[1].link);
    keel_list_remove(&it[3].link);
    KT_CHECK(keel_list_empty(&head));
}

static void a_removed_node_is_unlinked_and_removing_it_again_does_nothing(void)
{
    keel_list_t head;
    keel_list_init(&head);
    item_t it[2];
    items_init(it, 2);
    KT_CHECK(!keel_list_linked(&it[0].link));
    keel_list_remove(&it[0].link); /* never linked: a no-op */
    keel_list_insert_tail(&head, &it[0].link);
    keel_list_insert_tail(&head, &it[1].link);
    KT_CHECK(keel_list_linked(&it[0].link));
    keel_list_remove(&it[0].link);
    KT_CHECK(!keel_list_linked(&it[0].link));
    keel_list_remove(&it[0].link); /* the second remove leaves the list alone */
    int got[4];
    KT_EQ_INT(ids(&head, got, 4), 1);
    KT_EQ_INT(got[0], 1);
    keel_list_insert_head(&head, &it[0].link); /* and the node can be inserted again */
    KT_EQ_INT(ids(&head, got, 4), 2);
    KT_EQ_INT(got[0], 0);
}

static void safe_iteration_may_remove_and_free_the_current_node(void)
{
    keel_list_t head;
    keel_list_init(&head);
    for (int i = 0; i < 10; i++) {
        item_t *x = malloc(sizeof(*x));
        KT_CHECK(x != NULL);
        x->id = i;
        keel_list_init(&x->link);
        keel_list_insert_tail(&head, &x->link);
    }
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &head)
    { /* free the odd ones */
        item_t *x = KEEL_LIST_ENTRY(it, item_t, link);
        if (x->id % 2 == 1) {
            keel_list_remove(&x->link);
            free(x);
        }
    }
    int got[16], n = 0;
    KEEL_LIST_FOREACH(it, &head)
    got[n++] = KEEL_LIST_ENTRY(it, item_t, link)->id;
    KT_EQ_INT(n, 5);
    for (int i = 0; i < 5; i++)
        KT_EQ_INT(got[i], 2 * i);
    KEEL_LIST_FOREACH_SAFE(it, tmp, &head)
    {
        keel_list_remove(it);
        free(KEEL_LIST_ENTRY(it, item_t, link));
    }
    KT_CHECK(keel_list_empty(&head));
}

static void a_linked_node_that_moved_is_found_again_by_its_neighbours(void)
{
    keel_list_t head;
    keel_list_init(&head);
    item_t it[2];
    items_init(it, 2);
    item_t *m = malloc(sizeof(*m));
    KT_CHECK(m != NULL);
    m->id = 7;
    keel_list_init(&m->link);
    keel_list_insert_tail(&head, &it[0].link);
    keel_list_insert_tail(&head, &m->link);
    keel_list_insert_tail(&head, &it[1].link);
    item_t *moved = malloc(sizeof(*moved)); /* what realloc does when it cannot grow in place */
    KT_CHECK(moved != NULL);
    memcpy(moved, m, sizeof(*m));
    free(m);
    keel_list_moved(&moved->link);
    int got[4];
    KT_EQ_INT(ids(&head, got, 4), 3);
    KT_EQ_INT(got[1], 7);
    keel_list_remove(&moved->link);
    free(moved);
    KT_EQ_INT(ids(&head, got, 4), 2);
}

/* Runs fn in a child process; whether it died of SIGABRT (a failed assert). */
static int aborts(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    KT_CHECK(pid >= 0);
    if (pid == 0) {
        fclose(stderr); /* the child's assert message is expected: keep the log clean */
        fn();
        _exit(0);
    }
    int status = 0;
    KT_EQ_INT(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void insert_twice(void)
{
    keel_list_t a, b;
    item_t x;
    keel_list_init(&a);
    keel_list_init(&b);
    keel_list_init(&x.link);
    keel_list_insert_tail(&a, &x.link);
    keel_list_insert_tail(&b, &x.link); /* still in a */
}

static void insert_uninitialised(void)
{
    keel_list_t a;
    item_t x = {0}; /* calloc'd, never keel_list_init'ed */
    keel_list_init(&a);
    keel_list_insert_tail(&a, &x.link);
}

static void insert_same_twice_control(void)
{
    keel_list_t a;
    item_t x;
    keel_list_init(&a);
    keel_list_init(&x.link);
    keel_list_insert_tail(&a, &x.link);
    keel_list_remove(&x.link);
    keel_list_insert_tail(&a, &x.link);
}

static void inserting_a_linked_or_uninitialised_node_asserts(void)
{
    KT_CHECK(!aborts(insert_same_twice_control)); /* remove in between: fine */
    KT_CHECK(aborts(insert_twice));
    KT_CHECK(aborts(insert_uninitialised));
}

/*
 * Random inserts at either end and removals anywhere, checked after every step against an
 * array model of the expected order, forwards and backwards.
 */
static void random_operations_match_an_array_model(void)
{
    uint64_t seed = 0x5eed11575eedull;
    KT_SEED(seed);
    keel_rand_t rng;
    keel_rand_seed(&rng, seed);
    keel_list_t head;
    keel_list_init(&head);
    item_t items[ITEMS_MAX];
    items_init(items, ITEMS_MAX);
    int model[ITEMS_MAX];
    size_t n = 0;
    for (int step = 0; step < 20000; step++) {
        int id = (int)keel_rand_below(&rng, ITEMS_MAX);
        item_t *x = &items[id];
        size_t at = n;
        for (size_t i = 0; i < n; i++)
            if (model[i] == id)
                at = i;
        if (at < n) {
            keel_list_remove(&x->link);
            memmove(model + at, model + at + 1, (n - at - 1) * sizeof(int));
            n--;
        } else if (keel_rand_below(&rng, 2) == 0) {
            keel_list_insert_head(&head, &x->link);
            memmove(model + 1, model, n * sizeof(int));
            model[0] = id;
            n++;
        } else {
            keel_list_insert_tail(&head, &x->link);
            model[n++] = id;
        }
        int got[ITEMS_MAX];
        KT_EQ_INT(ids(&head, got, ITEMS_MAX), n);
        KT_EQ_MEM(got, model, n * sizeof(int));
        size_t back = n;
        for (keel_list_t *it = head.prev; it != &head; it = it->prev)
            KT_EQ_INT(KEEL_LIST_ENTRY(it, item_t, link)->id, model[--back]);
        KT_EQ_INT(back, 0);
        KT_EQ_INT(keel_list_empty(&head), n == 0);
    }
}

int main(void)
{
    KT_RUN(a_new_list_is_empty_and_has_no_first);
    KT_RUN(insert_tail_keeps_order_and_insert_head_reverses_it);
    KT_RUN(removing_first_middle_and_last_leaves_the_rest_in_order);
    KT_RUN(a_removed_node_is_unlinked_and_removing_it_again_does_nothing);
    KT_RUN(safe_iteration_may_remove_and_free_the_current_node);
    KT_RUN(a_linked_node_that_moved_is_found_again_by_its_neighbours);
    KT_RUN(inserting_a_linked_or_uninitialised_node_asserts);
    KT_RUN(random_operations_match_an_array_model);
    return kt_done();
}
