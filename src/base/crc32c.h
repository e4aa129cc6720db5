/* crc32c.h - CRC-32C (Castagnoli), hardware-accelerated where the CPU has SSE4.2. */
#ifndef KEEL_BASE_CRC32C_H
#define KEEL_BASE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * CRC-32C (polynomial 0x1EDC6F41, reflected 0x82F63B78), as used by iSCSI,
 * ext4 and etcd's WAL. Check value: crc32c("123456789") == 0xE3069283.
 * keel_crc32c() picks the SSE4.2 `crc32` instruction when cpuid says the CPU
 * has it, and a slicing-by-8 table otherwise; both are exported so tests can
 * check that they agree.
 *
 * `crc` is the running value: start with 0, pass the previous result to
 * continue over split data: crc32c(crc32c(0, a), b) == crc32c(0, a||b).
 */
uint32_t keel_crc32c(uint32_t crc, const void *data, size_t n);
uint32_t keel_crc32c_sw(uint32_t crc, const void *data, size_t n);
/* Returns 0 when the CPU lacks the instruction (then callers use _sw). */
int keel_crc32c_hw_available(void);
uint32_t keel_crc32c_hw(uint32_t crc, const void *data, size_t n);

#endif
