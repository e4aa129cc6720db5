/* frame.h - peer frame codec: length-prefixed, versioned, CRC32C-checked binary frames. */
#ifndef KEEL_PROTO_FRAME_H
#define KEEL_PROTO_FRAME_H

#include "base/buf.h"
#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Wire layout of one frame (all integers little-endian):
 *
 *   offset  size  field
 *   0       4     length   bytes that follow this field: 1 + 1 + payload + 4
 *   4       1     version  KEEL_FRAME_VERSION (1)
 *   5       1     type     meaning chosen by the user of the frame (Raft message kind, ...)
 *   6       n     payload  n = length - 6 bytes, opaque here
 *   6+n     4     crc      CRC-32C (base/crc32c.h) of bytes [0, 6+n): the length,
 *                          version, type and payload, i.e. everything before it
 *
 * The whole frame is 4 + length bytes. The smallest legal frame is an empty
 * payload: length = 6, 10 bytes on the wire. Covering the length in the CRC
 * means a flipped bit in the length that still lands on a plausible size is
 * caught too, not just payload damage.
 *
 * A decoder rejects, as soon as enough bytes are present to tell:
 *   - a length below 6 (KEEL_EPROTO) or a frame above frame_bytes_max
 *     (KEEL_ETOOBIG), checked from the first 4 bytes, before any payload
 *     arrives, so a peer cannot make us buffer a claimed 4 GB;
 *   - a version other than KEEL_FRAME_VERSION (KEEL_EPROTO), from byte 5;
 *   - a CRC mismatch (KEEL_ECORRUPT), once the whole frame is present.
 * After any error the stream is out of sync: the caller closes the connection.
 */
#define KEEL_FRAME_VERSION 1u
#define KEEL_FRAME_HEADER_BYTES 6u /* length + version + type */
#define KEEL_FRAME_TRAILER_BYTES 4u
#define KEEL_FRAME_OVERHEAD_BYTES (KEEL_FRAME_HEADER_BYTES + KEEL_FRAME_TRAILER_BYTES)
#define KEEL_FRAME_LENGTH_MIN 6u                           /* version + type + crc */
#define KEEL_FRAME_BYTES_MAX (1024u * 1024u * 1024u)       /* hard cap on a whole frame */
#define KEEL_FRAME_BYTES_MAX_DEFAULT (16u * 1024u * 1024u) /* default frame_bytes_max */

typedef struct keel_frame {
    uint8_t version;
    uint8_t type;
    const uint8_t *payload; /* borrowed from the decoder's input */
    size_t payload_len;
} keel_frame_t;

/* Appends one whole frame. 0, or KEEL_ETOOBIG / KEEL_ENOMEM with b unchanged. */
int keel_frame_encode(keel_buf_t *b, uint8_t type, const void *payload, size_t payload_len);

/*
 * Zero-copy encoding for payloads built in place: begin() appends the header
 * with a placeholder length and returns (in *mark) where the frame starts;
 * the caller appends the payload to b (without consuming from b meanwhile);
 * end() patches the length and appends the CRC. On an error from end() or
 * from the caller's appends, keel_frame_abort() drops the partial frame.
 */
int keel_frame_begin(keel_buf_t *b, uint8_t type, size_t *mark);
int keel_frame_end(keel_buf_t *b, size_t mark);
void keel_frame_abort(keel_buf_t *b, size_t mark);

typedef struct keel_frame_decoder {
    size_t frame_bytes_max; /* KEEL_FRAME_OVERHEAD_BYTES..KEEL_FRAME_BYTES_MAX */
    int error;              /* sticky: first error seen, 0 while healthy */
    size_t want_bytes;      /* after KEEL_EAGAIN: bytes the current frame needs in all */
} keel_frame_decoder_t;

/* frame_bytes_max 0 means KEEL_FRAME_BYTES_MAX_DEFAULT; otherwise must be in range. */
int keel_frame_decoder_init(keel_frame_decoder_t *d, size_t frame_bytes_max, keel_errmsg_t *msg);

/*
 * Decodes the frame at the front of data[0..len). 0 with *f (payload points
 * into data) and *consumed = the frame's size; KEEL_EAGAIN if incomplete
 * (*consumed = 0, d->want_bytes says how much the frame needs: the caller can
 * read until it has that many, and the number is already checked against
 * frame_bytes_max); KEEL_EPROTO / KEEL_ETOOBIG / KEEL_ECORRUPT with text in
 * msg, after which every call returns the same error.
 */
int keel_frame_decode(keel_frame_decoder_t *d, const uint8_t *data, size_t len, keel_frame_t *f,
                      size_t *consumed, keel_errmsg_t *msg);

#endif
