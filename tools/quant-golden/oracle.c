// Golden bytes for glmtool's quantizers: llama.cpp 2026's own ggml_quantize_chunk and to_float
// on deterministic awkward rows. Built and run by tools/quant-golden/make.sh (see there).
//
//   oracle            -> per-row FNV-1a-64 digests on stdout (tests/fixtures/quant-golden/digests.txt)
//   oracle --raw DIR  -> also DIR/<type>-<plain|imatrix>.bin (quantized rows) for debugging
//
// The input generator is mirrored exactly by crates/convert/tests/quant_golden.rs.
#include "ggml.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 240
#define COLS 512

static uint64_t state;
static uint64_t next_u64(void) { // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// uniform in [-1, 1), exactly representable (24 bits)
static float uni(void) { return (float)(next_u64() >> 40) / 16777216.0f * 2.0f - 1.0f; }

// Rows whose values sit on or within a few ulps of the points where q4_0/q5_0 (kind 12) or
// q4_1/q5_1 (kind 13) round to the next code: there a fused multiply-add and two separate
// roundings give different codes, so these rows tell the two apart.
static void near_ties(float *row, int kind, int five_bits) {
    for (int b = 0; b < COLS / 32; b++) {
        float *x = row + b * 32;
        float m = 0.5f + (uni() + 1.0f);  // in [0.5, 2.5)
        if (kind == 12) {
            float d = -m / (five_bits ? 16.0f : 8.0f);
            float bias = five_bits ? 16.5f : 8.5f;
            int top = five_bits ? 32 : 16;
            x[0] = m;
            for (int j = 1; j < 32; j++) {
                int n = 1 + (int)(next_u64() % (uint64_t)(top - 1));
                int k = (int)(next_u64() % 5) - 2;
                x[j] = ((float)n - bias) * d * (1.0f + (float)k * 1.1920929e-07f);
            }
        } else {
            float nmax = five_bits ? 31.0f : 15.0f;
            float min = -(0.2f + (uni() + 1.0f) * 0.5f);
            float d = m / nmax;
            x[0] = min;
            x[1] = min + nmax * d;
            for (int j = 2; j < 32; j++) {
                int n = 1 + (int)(next_u64() % (uint64_t)nmax);
                int k = (int)(next_u64() % 5) - 2;
                x[j] = (min + ((float)n - 0.5f) * d) * (1.0f + (float)k * 1.1920929e-07f);
            }
        }
    }
}

static void make_rows(float *x) {
    state = 20261202;
    for (int r = 0; r < ROWS; r++) {
        float *row = x + (size_t)r * COLS;
        int kind = r % 14;
        float scale = 1.0f;
        for (int e = (r / 12) % 20 - 10; e > 0; e--) scale *= 2.0f;
        for (int e = (r / 12) % 20 - 10; e < 0; e++) scale *= 0.5f;
        for (int j = 0; j < COLS; j++) {
            float u = uni();
            float v;
            switch (kind) {
                case 0: v = u; break;
                case 1: v = u * scale; break;
                case 2: v = (float)(int)(u * 16.0f) * 0.25f; break;   // exact ties
                case 3: v = 0.0f; break;
                case 4: v = 0.37f; break;
                case 5: v = u * 1e-30f; break;
                case 6: v = u * 1e4f; break;
                case 7: v = (j % 32 == 5) ? 3.0f : u * 0.01f; break;  // one outlier a block
                case 8: v = u < 0 ? u : -u; break;
                case 9: v = u < 0 ? -u : u; break;
                case 10: v = u + uni() + uni() + uni(); break;
                case 11: v = (next_u64() % 10 == 0) ? u : 0.0f; break;  // sparse
                default: v = u; break;  // kinds 12, 13: overwritten below
            }
            row[j] = v;
        }
        if (kind >= 12) near_ties(row, kind, (r / 14) % 2);
    }
}

static void make_weights(float *w) {
    state = 7;
    for (int j = 0; j < COLS; j++) {
        float u = uni();
        w[j] = (j % 7 == 0) ? 0.0f : (j % 11 == 0 ? 1e-6f : (u + 1.0f) * 1.5f);
    }
}

static uint64_t fnv(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

int main(int argc, char **argv) {
    const char *raw = argc == 3 && strcmp(argv[1], "--raw") == 0 ? argv[2] : NULL;
    static float x[ROWS * COLS], w[COLS], back[COLS];
    make_rows(x);
    make_weights(w);
    const enum ggml_type types[] = {
        GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
        GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K,
        GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_XS,
    };
    printf("# tools/quant-golden/oracle.c: %d rows x %d, per-row FNV-1a-64 of ggml_quantize_chunk's bytes\n", ROWS, COLS);
    printf("# and of to_float(those bytes) as f32 little-endian; regenerate: bash tools/quant-golden/make.sh\n");
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        enum ggml_type ty = types[t];
        size_t row_bytes = ggml_row_size(ty, COLS);
        uint8_t *q = malloc(row_bytes * ROWS);
        for (int imx = 0; imx < 2; imx++) {
            size_t n = ggml_quantize_chunk(ty, x, q, 0, ROWS, COLS, imx ? w : NULL);
            if (n != row_bytes * ROWS) { fprintf(stderr, "size mismatch\n"); return 1; }
            const char *path = imx ? "imatrix" : "plain";
            printf("quant %s %s %zu", ggml_type_name(ty), path, row_bytes);
            for (int r = 0; r < ROWS; r++) printf(" %016llx", (unsigned long long)fnv(q + r * row_bytes, row_bytes));
            printf("\n");
            const struct ggml_type_traits *tr = ggml_get_type_traits(ty);
            printf("dequant %s %s", ggml_type_name(ty), path);
            for (int r = 0; r < ROWS; r++) {
                tr->to_float(q + r * row_bytes, back, COLS);
                printf(" %016llx", (unsigned long long)fnv((const uint8_t *)back, sizeof back));
            }
            printf("\n");
            if (raw) {
                char name[512];
                snprintf(name, sizeof name, "%s/%s-%s.bin", raw, ggml_type_name(ty), path);
                FILE *f = fopen(name, "wb");
                fwrite(q, 1, n, f);
                fclose(f);
            }
        }
        free(q);
    }
    if (raw) {
        char name[512];
        snprintf(name, sizeof name, "%s/input.f32", raw);
        FILE *f = fopen(name, "wb");
        fwrite(x, sizeof(float), ROWS * COLS, f);
        fwrite(w, sizeof(float), COLS, f);
        fclose(f);
    }
    return 0;
}
