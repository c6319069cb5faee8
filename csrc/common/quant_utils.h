// Scalar helpers shared by the CPU and CUDA quantization kernels.
#pragma once

#include <ATen/core/PhiloxRNGEngine.h>

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MMDAQ_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MMDAQ_HOST_DEVICE inline
#endif

namespace mmdaq {

// Largest INT8 code the symmetric quantizer produces; -128 is never used.
constexpr int kInt8MaxCode = 127;

// Symmetric INT8 code of `x` for step `scale`: round-half-to-even(x / scale), saturated to
// [-127, 127]. A zero scale (all-zero tensor or channel) and a non-finite x give code 0: the
// non-finite value stays visible through the scale (see mmdaq/quantization/quantize.py).
MMDAQ_HOST_DEVICE int8_t quantize_code(float x, float scale) {
  if (!(scale > 0.0f) || !(x - x == 0.0f)) {  // x - x is NaN for NaN and +-Inf
    return 0;
  }
  float v = nearbyintf(x / scale);  // default FP environment: round half to even
  v = v > kInt8MaxCode ? kInt8MaxCode : v;
  v = v < -kInt8MaxCode ? -kInt8MaxCode : v;
  return static_cast<int8_t>(v);
}

// v saturated to [-127, 127] and rounded half to even by the 1.5 * 2^23 trick (exact for
// |v| <= 127 under the default rounding mode): min/max and adds only, so loops over it
// vectorize.
inline float saturated_round(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  const float hi = static_cast<float>(kInt8MaxCode);
  v = v < hi ? v : hi;
  v = v > -hi ? v : -hi;
  return (v + kMagic) - kMagic;
}

// quantize_code over a row of n values sharing one scale, written so that it vectorizes:
// saturated_round of x / scale, non-finite x (x - x != 0) and a non-positive or NaN scale
// selected to 0 at the end. Same codes as quantize_code, bit for bit (tested).
inline void quantize_row(const float* x, int8_t* out, int64_t n, float scale) {
  if (!(scale > 0.0f)) {
    for (int64_t i = 0; i < n; ++i) out[i] = 0;
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    const float v = saturated_round(xi / scale);
    out[i] = (xi - xi == 0.0f) ? static_cast<int8_t>(v) : int8_t{0};
  }
}

// quantize_row for two steps at once: out_a gets the codes for scale_a, out_b those for
// scale_b, from one read of x (the same operations per code as quantize_row).
inline void quantize_row_pair(const float* x, int8_t* out_a, int8_t* out_b, int64_t n,
                              float scale_a, float scale_b) {
  if (!(scale_a > 0.0f) || !(scale_b > 0.0f)) {
    quantize_row(x, out_a, n, scale_a);
    quantize_row(x, out_b, n, scale_b);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    const float a = saturated_round(xi / scale_a), b = saturated_round(xi / scale_b);
    const bool finite = xi - xi == 0.0f;
    out_a[i] = finite ? static_cast<int8_t>(a) : int8_t{0};
    out_b[i] = finite ? static_cast<int8_t>(b) : int8_t{0};
  }
}

// Quantization step of a clip: clip / qmax, one float below where qmax * step would round up
// past the float32 maximum, NaN unless data_max and clip are finite and clip >= 0 (the
// non-finite policy of mmdaq/quantization/quantize.py, _scale_from_clip).
MMDAQ_HOST_DEVICE float clip_to_step(float clip, float data_max, int qmax) {
  const bool valid = (data_max - data_max == 0.0f) && (clip - clip == 0.0f) && clip >= 0.0f;
  float step = clip / static_cast<float>(qmax);
  const float back = step * static_cast<float>(qmax);
  if (!(back - back == 0.0f) && back == back) {  // +-Inf (not NaN)
#if defined(__CUDA_ARCH__)
    step = nextafterf(step, 0.0f);
#else
    step = std::nextafter(step, 0.0f);
#endif
  }
  return valid ? step : NAN;
}

// The uniform numbers in [0, 1) of elements 4b .. 4b+3 of the stream (seed, offset): block
// b = offset + i / 4 of Philox-4x32-10, counter-based, so every thread order and both devices
// give the same numbers. 24 random bits each (exact floats).
MMDAQ_HOST_DEVICE void philox_uniform4(uint64_t seed, uint64_t block, float out[4]) {
  at::philox_engine rng(seed, 0, block);
  for (int k = 0; k < 4; ++k) out[k] = static_cast<float>(rng() >> 8) * (1.0f / 16777216.0f);
}

// Calls fn(i, u_i) for the elements i of Philox block b (4b .. 4b+3, those below n), u_i their
// uniform numbers: the one walk of the stream shared by the stochastic kernels.
template <typename Fn>
MMDAQ_HOST_DEVICE void for_philox_block(uint64_t seed, uint64_t offset, int64_t b, int64_t n,
                                        Fn&& fn) {
  float u[4];
  philox_uniform4(seed, offset + static_cast<uint64_t>(b), u);
  for (int k = 0; k < 4 && 4 * b + k < n; ++k) fn(4 * b + k, u[k]);
}

// Stochastic INT8 code of x for step `scale` and uniform u in [0, 1):
// floor(v) + (u < v - floor(v)) with v = clamp(x / scale, -127, 127): unbiased inside the clip.
// Zero for a non-positive or NaN scale and a non-finite x, as quantize_code.
MMDAQ_HOST_DEVICE int8_t stochastic_code(float x, float scale, float u) {
  if (!(scale > 0.0f) || !(x - x == 0.0f)) {
    return 0;
  }
  float v = x / scale;
  v = v > kInt8MaxCode ? kInt8MaxCode : v;
  v = v < -kInt8MaxCode ? -kInt8MaxCode : v;
  const float f = floorf(v);
  return static_cast<int8_t>(f + (u < v - f ? 1.0f : 0.0f));
}

}  // namespace mmdaq
