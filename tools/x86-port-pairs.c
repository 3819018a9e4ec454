// Which AVX2 integer operations share execution ports with vpmaddwd: the time of a loop of pairs
// (one vpmaddwd and one other operation, each on five independent register chains) relative to
// the same loop of two vpmaddwd. 1.0: the other operation competes for vpmaddwd's ports; about
// 0.5: it runs beside them. Written in inline assembly so that the compiler adds nothing.
//   gcc -O2 tools/x86-port-pairs.c -o /tmp/port-pairs && /tmp/port-pairs
// Used for the AVX2 iq4 kernels (docs/cpu-kernels.md, "Per format"); no part of the build.
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

// five pairs: a on ymm0-4, b on ymm5-9
#define LOOP(a, b)                                                                          \
  static double loop_##a##_##b(long n) {                                                    \
    double t0 = now();                                                                      \
    __asm__ volatile("vpxor %%ymm15, %%ymm15, %%ymm15\n"                                  \
                     "1:\n" a("0") b("5") a("1") b("6") a("2") b("7") a("3") b("8") a("4") \
                         b("9") "dec %0\n"                                                  \
                     "jnz 1b\n"                                                             \
                     : "+r"(n)                                                              \
                     :                                                                      \
                     : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",      \
                       "xmm8", "xmm9", "xmm15", "cc");                                      \
    return now() - t0;                                                                      \
  }

LOOP(MADD, MADD)
LOOP(MADD, MADDUBS)
LOOP(MADD, SIGN)
LOOP(MADD, ABS)
LOOP(MADD, SHUF)
LOOP(MADD, SLL)
LOOP(MADD, ADD)

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
  return 0;
}
