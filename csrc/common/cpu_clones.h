// MMDAQ_CPU_CLONES: compile a CPU hot loop for AVX-512, AVX2 and baseline x86-64 and pick the
// version at load time (GCC/Clang function multi-versioning, an ifunc resolver). The build's
// baseline is SSE2, where the elementwise loops of the quantization kernels stay scalar.
// Every version does the same IEEE float operations in the same order per element (setup.py
// builds with -ffp-contract=off, so no version fuses a multiply and an add into an FMA), so
// results are bit-identical on every ISA.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__) && !defined(_WIN32)
#define MMDAQ_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MMDAQ_CPU_CLONES
#endif
