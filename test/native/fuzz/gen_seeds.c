/*
 * Writes small seed inputs for the fuzz targets into <dir>/<target>/:
 * a valid response and put_data sequence, the released-buffer-reuse case,
 * a queue holding a few entries (also wrapped), and kev messages of chunked
 * paths (300 bytes, and 2000: past macOS's 1024).
 */
#include "nke_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void write_seed(const char *dir, const char *target, const char *name, const void *b,
                       size_t n)
{
    char path[512];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
    f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite(b, 1, n, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    static uint8_t buf[8192];
    size_t n;
    uint32_t i;
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds DIR\n");
        return 2;
    }
    /* response: structured verdicts and releases over the 4 initial chunks */
    {
        const uint8_t s1[] = {1, 4, 4, 0, 1, 0, 1, 2, 0, 2, 3, 0, 3, 1, 0, 0, 0, 1, 0, 2, 0, 3, 0, 5, 0xFF};
        const uint8_t s2[] = {3, 2, 5, 0, 5, 3, 2, 5, 6, 1, 2, 3, 1, 1, 0, 2, 2, 10, 2, 0, 0x85, 0xF7};
        write_seed(argv[1], "response", "verdicts", s1, sizeof(s1));
        write_seed(argv[1], "response", "put_then_modify", s2, sizeof(s2));
        /* Every start chunk's deadline passes (NOW += 13 * 4 ms), a new
         * 1-byte chunk takes the last buffer freed (6), then one response:
         * ALLOW the new chunk, release stale chunk 1's buffer 6 and the new
         * chunk's own (6 again). Refused as BUF_DUP before stale entries
         * were skipped first. */
        const uint8_t s3[] = {0x6D, 0x04, 1, 1, 2, 5, 1, 0, 1, 6, 5, 0};
        write_seed(argv[1], "response", "stale_release_reused_buffer", s3, sizeof(s3));
        {
            /* EXTEND chunks 1 and 2 (to 2 s, and to the cap), time passes
             * beyond their first deadline (0xF5: op 5, NOW += 30 * 4 ms,
             * twice), then a verdict on one of them. */
            const uint8_t s4[] = {1, 2, 0, 1, 4, 100, 2, 4, 11, 0xF5, 0xF5, 1, 1, 0, 1, 1, 0};
            write_seed(argv[1], "response", "extend", s4, sizeof(s4));
        }
        n = 0;
        buf[n++] = 0; /* raw response: header only */
        buf[n++] = 16;
        buf[n++] = 0;
        {
            struct nke_response_hdr h;
            memset(&h, 0, sizeof(h));
            h.abi_version = NKE_ABI_VERSION;
            h.size = sizeof(h);
            memcpy(buf + n, &h, sizeof(h));
            n += sizeof(h);
        }
        write_seed(argv[1], "response", "raw_empty", buf, n);
    }
    /* queue: four entries, and a wrapped layout */
    {
        uint16_t ds4 = 63; /* 256 bytes */
        uint32_t head = 0, tail = 0, v;
        memset(buf, 0, sizeof(buf));
        memcpy(buf, &ds4, 2);
        n = 10;
        for (i = 0; i < 8; i++)
            buf[n++] = (uint8_t)(i % 2 ? 0x90 : 40);
        for (i = 0; i < 8; i++)
            buf[n++] = 100;
        for (i = 0; i < 4; i++) {
            v = 8;
            memcpy(buf + n + tail, &v, 4);
            tail += 12;
        }
        memcpy(buf + 2, &head, 4);
        memcpy(buf + 6, &tail, 4);
        write_seed(argv[1], "dq", "four_entries", buf, n + 256);
        head = 248;
        tail = 44;
        memset(buf + n, 0, 256);
        v = 40;
        memcpy(buf + n + 248, &v, 4);
        memcpy(buf + n, &v, 4);
        memcpy(buf + 2, &head, 4);
        memcpy(buf + 6, &tail, 4);
        write_seed(argv[1], "dq", "wrapped", buf, n + 256);
    }
    /* kev: a 300-byte path in 176-byte pieces, structured records */
    {
        n = 0;
        for (i = 0; i < 2; i++) {
            uint16_t total = 300, off = (uint16_t)(i * 176);
            uint8_t plen = (uint8_t)(i == 0 ? 176 : 124);
            uint32_t k;
            buf[n++] = 1;
            buf[n++] = 2;         /* exec 2 */
            buf[n++] = (uint8_t)i;
            buf[n++] = 2;
            memcpy(buf + n, &total, 2);
            n += 2;
            memcpy(buf + n, &off, 2);
            n += 2;
            buf[n++] = plen;
            for (k = 0; k < plen; k++)
                buf[n++] = (uint8_t)('a' + (off + k) % 26);
        }
        write_seed(argv[1], "kev", "two_chunks", buf, n);
        /* 2000 bytes in 12 pieces of 176 (the last 64): longer than macOS allows */
        n = 0;
        for (i = 0; i < 12; i++) {
            uint16_t total = 2000, off = (uint16_t)(i * 176);
            uint8_t plen = (uint8_t)(i < 11 ? 176 : 2000 - 11 * 176);
            uint32_t k;
            buf[n++] = 1;
            buf[n++] = 3; /* exec 3 */
            buf[n++] = (uint8_t)i;
            buf[n++] = 12;
            memcpy(buf + n, &total, 2);
            n += 2;
            memcpy(buf + n, &off, 2);
            n += 2;
            buf[n++] = plen;
            for (k = 0; k < plen; k++)
                buf[n++] = (uint8_t)('a' + (off + k) % 26);
        }
        write_seed(argv[1], "kev", "long_path", buf, n);
    }
    return 0;
}
