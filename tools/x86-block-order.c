// Does the order in which a kernel first reads the lines of each weight block change how fast one
// core streams the weights from memory? A copy, in C, of glm-kernels' AVX-512 q4_K kernel for
// one token (the packed group block of crates/kernels/src/formats/q4_k.rs: a 320-byte header of
// d, dmin, scales and mins, then 2048 bytes of nibble vectors; the header's scales are read per
// sub-block and its d, dmin and mins after the nibbles), run over 512 MiB of 2 MiB pages, first
// as the kernel was (header lines first missed between and after the nibbles), then with one
// byte of each header line read before the block (what `Format::HEADER` makes the drivers do).
// Each against a plain read loop over the same buffer, run just before it.
//   gcc -O3 -mavx512f -mavx512bw -mavx512vnni -mf16c tools/x86-block-order.c -o /tmp/block-order
//   /tmp/block-order
// Needs AVX-512 VNNI. Used for docs/cpu-kernels.md ("Blocks read front to back"); no part of the
// build. The weights are arbitrary bytes: only the time means something.
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

enum { SC = 64, MINS = 192, QS = 320, GBB = 2368, NB = 16, ACT = 292 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// One group block (16 rows × 256 columns) against one activation block, into acc.
static inline __attribute__((always_inline)) void block(const char *p, const char *a, __m512 *acc,
                                                        int touch) {
  const __m512i lo = _mm512_set1_epi8(0x0f), hi = _mm512_set1_epi8((char)0xf0);
  if (touch)
    for (int l = 0; l < QS / 64; l++) (void)*(volatile const char *)(p + 64 * l);
  __m512i sumi = _mm512_setzero_si512();
#pragma GCC unroll 8
  for (int j = 0; j < 8; j++) {
    __m512i u[8];
    const __m512i mask = (j & 1) ? hi : lo;
    for (int v = 0; v < 8; v++)
      u[v] = _mm512_and_si512(_mm512_loadu_si512(p + QS + 64 * (8 * (j / 2) + v)), mask);
    __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128((const void *)(p + SC + 16 * j)));
    if (!(j & 1)) sc = _mm512_slli_epi32(sc, 4);  // high nibbles stay in place: × 16
    __m512i s = _mm512_setzero_si512();
    for (int v = 0; v < 8; v++)
      s = _mm512_dpbusd_epi32(s, u[v], _mm512_set1_epi32(*(const int *)(a + 4 + 32 * j + 4 * v)));
    sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(s, sc));
  }
  const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const void *)p));
  const __m512 dm = _mm512_cvtph_ps(_mm256_loadu_si256((const void *)(p + 32)));
  __m512i summ = _mm512_setzero_si512();
  for (int i = 0; i < 4; i++) {
    const __m512i mn = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const void *)(p + MINS + 32 * i)));
    summ = _mm512_dpwssd_epi32(summ, mn, _mm512_set1_epi32(*(const int *)(a + 260 + 4 * i)));
  }
  const __m512 da = _mm512_set1_ps(*(const float *)a);
  *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_mul_ps(dw, da), *acc);
  *acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(summ), _mm512_mul_ps(dm, da), *acc);
}

// Groups of NB blocks, one after the other, as the packed matrix lies.
static __attribute__((noinline)) void run(const char *w, const char *a, long nblocks, float *out,
                                          int touch) {
  for (long g = 0; g < nblocks / NB; g++) {
    __m512 acc = _mm512_setzero_ps();
    for (long b = 0; b < NB; b++) block(w + (g * NB + b) * GBB, a + b * ACT, &acc, touch);
    _mm512_storeu_ps(out + 16 * (g % 64), acc);
  }
}

// The read loop: four 512-bit sums, as glm-kernels' ReadProbe.
static __attribute__((noinline)) long probe(const char *w, long len) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  for (long o = 0; o < len; o += 256) {
    s0 = _mm512_add_epi32(s0, _mm512_loadu_si512(w + o));
    s1 = _mm512_add_epi32(s1, _mm512_loadu_si512(w + o + 64));
    s2 = _mm512_add_epi32(s2, _mm512_loadu_si512(w + o + 128));
    s3 = _mm512_add_epi32(s3, _mm512_loadu_si512(w + o + 192));
  }
  long out[8];
  _mm512_storeu_si512(out, _mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3)));
  return out[0] + out[3];
}

int main(void) {
  const long len = 512L << 20;
  char *w = aligned_alloc(2 << 20, len);
  char *a = aligned_alloc(64, ACT * NB + 64);
  if (!w || !a) return 1;
  madvise(w, len, MADV_HUGEPAGE);
  for (long i = 0; i < len; i++) w[i] = (char)(i * 7);
  for (int i = 0; i < ACT * NB; i++) a[i] = (char)i;
  float out[1024];
  volatile long sink;
  long nblocks = len / GBB;
  nblocks -= nblocks % NB;
  const double bytes = (double)nblocks * GBB;
  for (int round = 0; round < 3; round++) {
    for (int touch = 0; touch < 2; touch++) {
      double t0 = now();
      sink = probe(w, len);
      double t1 = now();
      run(w, a, nblocks, out, touch);
      double t2 = now();
      printf("header %-13s read loop %5.1f GB/s, kernel %5.1f GB/s (%3.0f %%)\n",
             touch ? "touched first" : "read as was", len / (t1 - t0) / 1e9,
             bytes / (t2 - t1) / 1e9, 100.0 * (bytes / (t2 - t1)) / (len / (t1 - t0)));
    }
  }
  (void)sink;
  return out[0] == 12345.0f;  // keep the results alive
}
