/* maglev.c - Maglev table population (NSDI 2016 Pseudocode 1) over preallocated scratch. */
#include "core/maglev.h"
#include "base/rand.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

int keel_maglev_is_prime(uint32_t n)
{
    if (n < 2)
        return 0;
    for (uint32_t d = 2; (uint64_t)d * d <= n; d++)
        if (n % d == 0)
            return 0;
    return 1;
}

int keel_maglev_init(keel_maglev_t *m, uint32_t table_size, uint32_t nodes_max)
{
    memset(m, 0, sizeof(*m));
    if (!keel_maglev_is_prime(table_size) || table_size > KEEL_MAGLEV_TABLE_SIZE_MAX ||
        nodes_max == 0 || nodes_max >= table_size)
        return KEEL_EINVAL;
    m->table = malloc(sizeof(*m->table) * table_size);
    m->offset = malloc(sizeof(uint64_t) * nodes_max);
    m->skip = malloc(sizeof(uint64_t) * nodes_max);
    m->next = malloc(sizeof(uint64_t) * nodes_max);
    if (!m->table || !m->offset || !m->skip || !m->next) {
        keel_maglev_free(m);
        return KEEL_ENOMEM;
    }
    m->table_size = table_size;
    m->nodes_max = nodes_max;
    return 0;
}

void keel_maglev_free(keel_maglev_t *m)
{
    free(m->table);
    free(m->offset);
    free(m->skip);
    free(m->next);
    memset(m, 0, sizeof(*m));
}

void keel_maglev_build(keel_maglev_t *m, const uint64_t *ids, const uint8_t *include, uint32_t n)
{
    assert(n <= m->nodes_max);
    const uint64_t size = m->table_size;
    uint32_t in = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (include && !include[i])
            continue;
        /* two independent hashes of the id (the paper's h1 and h2) */
        m->offset[i] = keel_mix64(ids[i] ^ 0x6d61676c65763031ull) % size;
        m->skip[i] = keel_mix64(ids[i] ^ 0x6d61676c65763032ull) % (size - 1) + 1;
        m->next[i] = m->offset[i];
        in++;
    }
    m->nodes_n = in;
    memset(m->table, 0xff, sizeof(*m->table) * size);
    if (in == 0)
        return;
    /*
     * next[i] holds node i's next candidate slot (offset + j * skip mod M);
     * stepping is an add and a conditional subtract instead of a multiply and a
     * 64-bit modulo per probe (the table fill takes about M ln M probes).
     */
    uint64_t filled = 0;
    for (;;) {
        for (uint32_t i = 0; i < n; i++) {
            if (include && !include[i])
                continue;
            uint64_t c = m->next[i];
            while (m->table[c] != KEEL_MAGLEV_NONE) {
                c += m->skip[i];
                c = c >= size ? c - size : c;
            }
            m->table[c] = i;
            c += m->skip[i];
            m->next[i] = c >= size ? c - size : c;
            if (++filled == size)
                return;
        }
    }
}
