/* vec.c - growing a malloc'd array by doubling: the one place that does it. */
#include "base/vec.h"

#include "base/err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int keel_vec_grow(void *vp, size_t *cap, size_t need, size_t elem, size_t cap_min)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : (cap_min ? cap_min : 1);
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return KEEL_ENOMEM;
        ncap *= 2;
    }
    if (elem != 0 && ncap > SIZE_MAX / elem)
        return KEEL_ENOMEM;
    void *old; /* vp points at a T *: copied through memcpy, not cast to void ** */
    memcpy(&old, vp, sizeof(old));
    void *nv = realloc(old, ncap * elem);
    if (nv == NULL)
        return KEEL_ENOMEM;
    memcpy(vp, &nv, sizeof(nv));
    *cap = ncap;
    return 0;
}
