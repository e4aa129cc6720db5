/* vec.h - growing a malloc'd array by doubling: the one place that does it. */
#ifndef KEEL_BASE_VEC_H
#define KEEL_BASE_VEC_H

#include <stddef.h>

/*
 * Makes the array at *(T **)vp (capacity *cap elements of elem bytes) hold at least need
 * elements: the capacity doubles, from cap_min when it is 0, until it does, and the array
 * is realloc'd. Returns 0, or KEEL_ENOMEM with the array and *cap unchanged (also when
 * the size would overflow). Bounds on how many elements are allowed stay with the caller.
 */
int keel_vec_grow(void *vp, size_t *cap, size_t need, size_t elem, size_t cap_min);

#endif
