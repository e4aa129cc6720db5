/* glob.c - Redis-style glob patterns (stringmatchlen): KEYS, SCAN MATCH, PSUBSCRIBE. */
#include "base/glob.h"

/* ---- glob ---------------------------------------------------------------------- */

/*
 * One non-star token of a pattern against one byte, as Redis stringmatchlen
 * reads it: `?`, `\x`, a class `[...]` (`^` negates, `a-z` ranges, either way
 * round, `\]` escapes, an unclosed class runs to the end), or a literal.
 * *adv gets the token's length.
 */
static int token_matches(const uint8_t *pat, size_t plen, size_t p, uint8_t ch, size_t *adv)
{
    if (pat[p] == '?') {
        *adv = 1;
        return 1;
    }
    if (pat[p] == '\\') {
        *adv = plen - p >= 2 ? 2 : 1;
        return pat[p + *adv - 1] == ch;
    }
    if (pat[p] != '[') {
        *adv = 1;
        return pat[p] == ch;
    }
    size_t q = p + 1;
    int neg = q < plen && pat[q] == '^', match = 0;
    q += neg;
    while (q < plen) {
        if (pat[q] == '\\' && plen - q >= 2) {
            match |= pat[q + 1] == ch;
            q += 2;
        } else if (pat[q] == ']') {
            q++;
            break;
        } else if (plen - q >= 3 && pat[q + 1] == '-') {
            uint8_t lo = pat[q], hi = pat[q + 2];
            if (lo > hi) {
                uint8_t t = lo;
                lo = hi;
                hi = t;
            }
            match |= ch >= lo && ch <= hi;
            q += 3;
        } else {
            match |= pat[q] == ch;
            q++;
        }
    }
    *adv = q - p;
    return neg ? !match : match;
}

int keel_glob_match(const uint8_t *pat, size_t plen, const uint8_t *s, size_t slen)
{
    /* Redis quirk kept for compatibility: an empty string matches only an empty pattern. */
    if (slen == 0)
        return plen == 0;
    /* Greedy with one backtrack point: every non-star token eats exactly one
     * byte, so retrying from the last star is enough (no exponential blow-up). */
    size_t p = 0, i = 0, star_p = SIZE_MAX, star_i = 0, adv;
    while (i < slen) {
        if (p < plen && pat[p] == '*') {
            while (p < plen && pat[p] == '*')
                p++;
            if (p == plen)
                return 1;
            star_p = p;
            star_i = i;
            continue;
        }
        if (p < plen && token_matches(pat, plen, p, s[i], &adv)) {
            p += adv;
            i++;
            continue;
        }
        if (star_p == SIZE_MAX)
            return 0;
        p = star_p;
        i = ++star_i;
    }
    while (p < plen && pat[p] == '*')
        p++;
    return p == plen;
}
