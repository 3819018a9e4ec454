// Which AVX2 integer operations share execution ports with vpmaddwd: the time of a loop of pairs
// (one vpmaddwd and one other operation, each on five independent register chains) relative to
// the same loop of two vpmaddwd. 1.0: the other operation competes for vpmaddwd's ports; about
// 0.5: it runs beside them. Written in inline assembly so that the compiler adds nothing.
//   gcc -O2 tools/x86-port-pairs.c -o /tmp/port-pairs && /tmp/port-pairs
// Used for the AVX2 iq4 kernels (docs/cpu-kernels.md, "Per format"); no part of the build.
// Second part: whether a broadcast of 4 bytes from memory (`vpbroadcastd ymm, m32`, how the AVX2
// kernels take each token's activations) takes a vector ALU slot: 8 independent vpaddd (every
// vector ALU busy) alone, then with 4 broadcasts, then with 4 plain 32-byte loads beside them.
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// one operation on register r (ymm15 is the constant operand)
#define MADD(r) "vpmaddwd %%ymm15, %%ymm" r ", %%ymm" r "\n"
#define MADDUBS(r) "vpmaddubsw %%ymm15, %%ymm" r ", %%ymm" r "\n"
#define SIGN(r) "vpsignb %%ymm15, %%ymm" r ", %%ymm" r "\n"
#define ABS(r) "vpabsb %%ymm" r ", %%ymm" r "\n"
#define SHUF(r) "vpshufb %%ymm15, %%ymm" r ", %%ymm" r "\n"
#define SLL(r) "vpsllw $3, %%ymm" r ", %%ymm" r "\n"
#define ADD(r) "vpaddd %%ymm15, %%ymm" r ", %%ymm" r "\n"

// the asm loop `body` run n times (`%1` points at 128 readable bytes); ymm15 is set to zero first
static int mem[32] __attribute__((aligned(64)));
#define TIMED(name, body)                                                                   \
  static double name(long n) {                                                              \
    double t0 = now();                                                                      \
    __asm__ volatile("vpxor %%ymm15, %%ymm15, %%ymm15\n"                                  \
                     "1:\n" body "dec %0\n"                                                \
                     "jnz 1b\n"                                                             \
                     : "+r"(n)                                                              \
                     : "r"(mem)                                                             \
                     : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",      \
                       "xmm8", "xmm9", "xmm10", "xmm11", "xmm15", "cc", "memory");          \
    return now() - t0;                                                                      \
  }

// five pairs: a on ymm0-4, b on ymm5-9
#define LOOP(a, b) \
  TIMED(loop_##a##_##b, a("0") b("5") a("1") b("6") a("2") b("7") a("3") b("8") a("4") b("9"))

LOOP(MADD, MADD)
LOOP(MADD, MADDUBS)
LOOP(MADD, SIGN)
LOOP(MADD, ABS)
LOOP(MADD, SHUF)
LOOP(MADD, SLL)
LOOP(MADD, ADD)

#define ADDS8 ADD("0") ADD("1") ADD("2") ADD("3") ADD("4") ADD("5") ADD("6") ADD("7")
#define BCAST4 "vpbroadcastd (%1), %%ymm8\nvpbroadcastd 4(%1), %%ymm9\n" \
               "vpbroadcastd 8(%1), %%ymm10\nvpbroadcastd 12(%1), %%ymm11\n"
#define LOAD4 "vmovdqu (%1), %%ymm8\nvmovdqu 32(%1), %%ymm9\n" \
              "vmovdqu 64(%1), %%ymm10\nvmovdqu 96(%1), %%ymm11\n"

TIMED(adds, ADDS8)
TIMED(adds_bcast, ADDS8 BCAST4)
TIMED(adds_load, ADDS8 LOAD4)

int main(void) {
  long n = 100000000;
  loop_MADD_MADD(n); // the clock ramps up
  double base = loop_MADD_MADD(n);
  printf("relative to vpmaddwd + vpmaddwd (%.3f ns a pair):\n", base / n / 5 * 1e9);
  printf("vpmaddwd + vpmaddubsw  %.2f\n", loop_MADD_MADDUBS(n) / base);
  printf("vpmaddwd + vpsignb     %.2f\n", loop_MADD_SIGN(n) / base);
  printf("vpmaddwd + vpabsb      %.2f\n", loop_MADD_ABS(n) / base);
  printf("vpmaddwd + vpshufb     %.2f\n", loop_MADD_SHUF(n) / base);
  printf("vpmaddwd + vpsllw      %.2f\n", loop_MADD_SLL(n) / base);
  printf("vpmaddwd + vpaddd      %.2f\n", loop_MADD_ADD(n) / base);
  double adds8 = adds(n);
  printf("8 vpaddd: %.3f ns an iteration; with 4 vpbroadcastd m32 beside them %.2f of it, "
         "with 4 vmovdqu m256 %.2f\n",
         adds8 / n * 1e9, adds_bcast(n) / adds8, adds_load(n) / adds8);
  return 0;
}
