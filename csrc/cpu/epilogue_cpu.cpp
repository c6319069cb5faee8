// CPU kernel of mmdaq::int32_to_channels_first: scale, bias and the [N*L, C] -> [N, C, L]
// transpose in one pass, in tiles so that both the reads and the writes stay in cache lines.
// The accumulator is int32 (our GEMMs) or float32 holding integers (oneDNN's convolution
// writes float(acc)); both convert to float the same way, so the results are the same floats.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>

#include "../common/cpu_clones.h"
#include "../epilogue_args.h"

namespace {

constexpr int64_t kTileL = 64;
constexpr int64_t kTileC = 16;

// One tile: positions [l0, l1) x channels [c_begin, c_end) of one sample whose accumulator rows
// hold c values, in scalar form (the AVX-512 path below turns 16 x 16 blocks around in
// registers).
template <typename Acc>
MMDAQ_CPU_CLONES void tile(const Acc* __restrict__ a, const float* __restrict__ sp,
                           const float* __restrict__ bp, float* __restrict__ o, int64_t c,
                           int64_t l, int64_t l0, int64_t l1, int64_t c_begin, int64_t c_end) {
  for (int64_t c0 = c_begin; c0 < c_end; c0 += kTileC) {
    const int64_t c1 = std::min(c_end, c0 + kTileC);
    for (int64_t ch = c0; ch < c1; ++ch) {
      const float m = sp[ch], b = bp[ch];
      float* row = o + ch * l;
      for (int64_t i = l0; i < l1; ++i) row[i] = static_cast<float>(a[i * c + ch]) * m + b;
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define MMDAQ_EPILOGUE_AVX512 1
#include <immintrin.h>

// Transpose of 16 x 16 floats in registers: r[k] holds row k on entry, column k on exit.
__attribute__((target("avx512f"))) inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int k = 0; k < 16; k += 2) {
    t[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
    t[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
  }
  for (int k = 0; k < 16; k += 4) {
    r[k] = _mm512_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[k + 1] = _mm512_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[k + 2] = _mm512_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[k + 3] = _mm512_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 16; k += 8) {
    for (int j = 0; j < 4; ++j) {
      t[k + j] = _mm512_shuffle_f32x4(r[k + j], r[k + j + 4], 0x88);
      t[k + j + 4] = _mm512_shuffle_f32x4(r[k + j], r[k + j + 4], 0xdd);
    }
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
}

inline __attribute__((target("avx512f"))) __m512 load16(const int32_t* p) {
  return _mm512_cvtepi32_ps(_mm512_loadu_si512(p));  // round to nearest, as static_cast
}
inline __attribute__((target("avx512f"))) __m512 load16(const float* p) {
  return _mm512_loadu_ps(p);
}

// Positions [l0, l1) of one sample, in 16 x 16 blocks turned around in registers (instead of a
// strided scalar read per value); the edges that are not whole blocks go to tile(). The
// same two roundings per value as tile() (multiply, then add: no FMA), so the same floats.
template <typename Acc>
__attribute__((target("avx512f"))) void tile_avx512(const Acc* __restrict__ a,
                                                    const float* __restrict__ sp,
                                                    const float* __restrict__ bp,
                                                    float* __restrict__ o, int64_t c, int64_t l,
                                                    int64_t l0, int64_t l1) {
  const int64_t c16 = c / 16 * 16, l16 = l0 + (l1 - l0) / 16 * 16;
  __m512 r[16];
  for (int64_t c0 = 0; c0 < c16; c0 += 16) {
    for (int64_t i0 = l0; i0 < l16; i0 += 16) {
      for (int k = 0; k < 16; ++k) r[k] = load16(a + (i0 + k) * c + c0);
      transpose16(r);  // r[j]: channel c0 + j at positions i0 .. i0 + 15
      for (int j = 0; j < 16; ++j) {
        const __m512 v = _mm512_add_ps(_mm512_mul_ps(r[j], _mm512_set1_ps(sp[c0 + j])),
                                       _mm512_set1_ps(bp[c0 + j]));
        _mm512_storeu_ps(o + (c0 + j) * l + i0, v);
      }
    }
  }
  if (c16 < c) tile(a, sp, bp, o, c, l, l0, l1, c16, c);    // the last channels, all positions
  if (l16 < l1) tile(a, sp, bp, o, c, l, l16, l1, 0, c16);  // the last positions
}
#endif

template <typename Acc>
void channels_first_tiles(const Acc* ap, const float* sp, const float* bp, float* op, int64_t n,
                          int64_t c, int64_t l) {
  const int64_t tiles_l = (l + kTileL - 1) / kTileL;
#ifdef MMDAQ_EPILOGUE_AVX512
  const bool avx512 = __builtin_cpu_supports("avx512f");
#else
  const bool avx512 = false;
#endif
  at::parallel_for(0, n * tiles_l, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t s = t / tiles_l, l0 = (t % tiles_l) * kTileL;
      const int64_t l1 = std::min(l, l0 + kTileL);
#ifdef MMDAQ_EPILOGUE_AVX512
      if (avx512) {
        tile_avx512(ap + s * l * c, sp, bp, op + s * c * l, c, l, l0, l1);
        continue;
      }
#endif
      tile(ap + s * l * c, sp, bp, op + s * c * l, c, l, l0, l1, 0, c);
    }
  });
}

at::Tensor int32_to_channels_first_cpu(const at::Tensor& acc, const at::Tensor& scale,
                                       const c10::optional<at::Tensor>& bias,
                                       at::IntArrayRef out_shape) {
  const auto dims = mmdaq::check_epilogue_args(acc, scale, bias, out_shape,
                                               /*allow_float_acc=*/true);
  const int64_t n = dims.n, c = dims.c, l = dims.l;
  auto out = at::empty(out_shape, acc.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  const auto ac = acc.contiguous();
  // Per-channel multipliers and offsets (a per-tensor scale is broadcast once, here).
  const auto sc = scale.numel() == 1 ? scale.expand({c}).contiguous() : scale.contiguous();
  const auto bc = bias.has_value() ? bias->contiguous() : at::zeros({c}, scale.options());
  const float* sp = sc.data_ptr<float>();
  const float* bp = bc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  if (ac.scalar_type() == at::kFloat) {
    channels_first_tiles(ac.data_ptr<float>(), sp, bp, op, n, c, l);
  } else {
    channels_first_tiles(ac.data_ptr<int32_t>(), sp, bp, op, n, c, l);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) {
  m.impl("int32_to_channels_first", &int32_to_channels_first_cpu);
}
