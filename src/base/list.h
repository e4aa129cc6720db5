/* list.h - one intrusive doubly linked list with a sentinel head: the one place that links. */
#ifndef KEEL_BASE_LIST_H
#define KEEL_BASE_LIST_H

/*
 * A keel_list_t is both the head of a list and the link embedded in each element; the
 * list is circular through the head, so inserting and removing never test for NULL or
 * special-case the ends. The head owns nothing: elements are owned by whoever allocated
 * them, and freeing an element is the caller's business after keel_list_remove.
 *
 *     struct conn { keel_list_t link; ... };
 *     keel_list_t conns;                               keel_list_init(&conns);
 *     keel_list_init(&c->link);                        keel_list_insert_tail(&conns, &c->link);
 *     keel_list_t *it, *tmp;
 *     KEEL_LIST_FOREACH_SAFE (it, tmp, &conns) {
 *         struct conn *c = KEEL_LIST_ENTRY(it, struct conn, link);
 *         keel_list_remove(&c->link); free(c);     -- removing (and freeing) it is allowed
 *     }
 *
 * Every node, head or link, is keel_list_init'ed before use; a zeroed (calloc'd) node is
 * not a valid one and the asserts say so. A node that is in no list points at itself.
 *
 * Removal: keel_list_remove re-initialises the node, so removing a node that is already
 * out of every list is a harmless no-op. Close paths that may run for a node that was
 * never linked, or was unlinked earlier, call it without checking first. Inserting a
 * node that is still in a list is a programmer error and asserts.
 *
 * Asserts stay on in every build (STYLE.md rule 5): each step checks that the neighbours
 * it touches point back, which catches a freed or doubly inserted element near the bug.
 * Model: libuv's src/queue.h (the same circular sentinel design), written afresh.
 */
#include <assert.h>
#include <stddef.h>

typedef struct keel_list {
    struct keel_list *next, *prev;
} keel_list_t;

/* The element of type `type` whose member `field` is the node at `ptr` (container-of). */
#define KEEL_LIST_ENTRY(ptr, type, field) ((type *)(void *)((char *)(ptr)-offsetof(type, field)))

/* A static initialiser for an empty head: static keel_list_t h = KEEL_LIST_INIT(h); */
#define KEEL_LIST_INIT(name)                                                                       \
    {                                                                                              \
        &(name), &(name)                                                                           \
    }

/* Makes l an empty head, or an unlinked node. */
static inline void keel_list_init(keel_list_t *l)
{
    assert(l != NULL);
    l->next = l;
    l->prev = l;
}

/* Whether the head has no elements (equally: whether a node is in no list). */
static inline int keel_list_empty(const keel_list_t *head)
{
    assert(head->next != NULL && head->prev != NULL); /* initialised */
    assert(head->next->prev == head && head->prev->next == head);
    return head->next == head;
}

/* Whether node n is in some list. */
static inline int keel_list_linked(const keel_list_t *n)
{
    return !keel_list_empty(n);
}

static inline void keel__list_link(keel_list_t *prev, keel_list_t *n, keel_list_t *next)
{
    assert(prev->next == next && next->prev == prev);
    assert(n->next == n && n->prev == n); /* initialised and in no list */
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

/* Links n as the first element of head. n must be in no list. */
static inline void keel_list_insert_head(keel_list_t *head, keel_list_t *n)
{
    keel__list_link(head, n, head->next);
}

/* Links n as the last element of head. n must be in no list. */
static inline void keel_list_insert_tail(keel_list_t *head, keel_list_t *n)
{
    keel__list_link(head->prev, n, head);
}

/* Unlinks n from its list and re-initialises it; a no-op for a node in no list. */
static inline void keel_list_remove(keel_list_t *n)
{
    assert(n->next != NULL && n->prev != NULL); /* initialised */
    assert(n->next->prev == n && n->prev->next == n);
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n;
    n->prev = n;
}

/*
 * Node n was linked and its memory has just moved (realloc): points its neighbours at its
 * new address. Its own pointers, copied with it, still name the neighbours. A node that
 * was in no list pointed at its old address instead: keel_list_init it, do not call this.
 */
static inline void keel_list_moved(keel_list_t *n)
{
    assert(n->next != NULL && n->prev != NULL && n->next != n && n->prev != n);
    n->prev->next = n;
    n->next->prev = n;
}

/* The first element of head, or NULL when it is empty. */
static inline keel_list_t *keel_list_first(const keel_list_t *head)
{
    return keel_list_empty(head) ? NULL : head->next;
}

/* The last element of head, or NULL when it is empty. */
static inline keel_list_t *keel_list_last(const keel_list_t *head)
{
    return keel_list_empty(head) ? NULL : head->prev;
}

/* The element after n in head's list, or NULL when n is the last. */
static inline keel_list_t *keel_list_next(const keel_list_t *head, const keel_list_t *n)
{
    assert(n != head && n->next->prev == n);
    return n->next == head ? NULL : n->next;
}

/*
 * Visits every node of head in order, it pointing at each. The body must not unlink it;
 * use the _SAFE form for that.
 */
#define KEEL_LIST_FOREACH(it, head) for ((it) = (head)->next; (it) != (head); (it) = (it)->next)

/*
 * Visits every node of head in order; the body may remove (and free) it, the current node,
 * but no other: tmp holds the next node, read before the body runs.
 */
#define KEEL_LIST_FOREACH_SAFE(it, tmp, head)                                                      \
    for ((it) = (head)->next, (tmp) = (it)->next; (it) != (head); (it) = (tmp), (tmp) = (it)->next)

#endif
