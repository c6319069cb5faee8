// CPU kernel of mmdaq::int8_channels_last: the [N, C, L] -> [N, L, C] transpose of int8 codes
// (optionally shifted to uint8 by +128) in one pass, in 16 x 16 blocks.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <vector>

#include "../common/check.h"
#include "../common/cpu_clones.h"

namespace {

constexpr int64_t kBlock = 16;

// One kBlock x kBlock block (channels [c0, c0 + 16) x positions [l0, l0 + 16) of one sample)
// turned around in a local buffer: contiguous 16-byte reads and writes, vectorized.
MMDAQ_CPU_CLONES void full_block(const int8_t* __restrict__ in, uint8_t* __restrict__ o, int64_t c,
                                 int64_t l, int64_t l0, int64_t c0, uint8_t flip) {
  uint8_t t[kBlock][kBlock];
  for (int64_t j = 0; j < kBlock; ++j) {
    for (int64_t i = 0; i < kBlock; ++i) t[i][j] = static_cast<uint8_t>(in[(c0 + j) * l + l0 + i]);
  }
  for (int64_t i = 0; i < kBlock; ++i) {
    uint8_t* dst = o + (l0 + i) * c + c0;
    // code + 128 in [1, 255]: flipping the sign bit (flip = 0x80) is the same as adding 128.
    for (int64_t j = 0; j < kBlock; ++j) dst[j] = t[i][j] ^ flip;
  }
}

// A block narrower than kBlock in positions (w) or channels (h): the weights' few taps, the
// last positions or channels. The same as full_block with run-time sizes, in a function of its
// own: with the sizes and pointers as by-value restrict arguments the compiler need not reload
// them after every byte store (uint8_t stores may alias anything reached by reference).
MMDAQ_CPU_CLONES void edge_block(const int8_t* __restrict__ in, uint8_t* __restrict__ o,
                                 int64_t c, int64_t l, int64_t l0, int64_t w, int64_t c0,
                                 int64_t h, uint8_t flip) {
  uint8_t t[kBlock][kBlock];
  for (int64_t j = 0; j < h; ++j) {
    const int8_t* src = in + (c0 + j) * l + l0;
    for (int64_t i = 0; i < w; ++i) t[i][j] = static_cast<uint8_t>(src[i]);
  }
  for (int64_t i = 0; i < w; ++i) {
    uint8_t* dst = o + (l0 + i) * c + c0;
    for (int64_t j = 0; j < h; ++j) dst[j] = t[i][j] ^ flip;
  }
}

at::Tensor int8_channels_last_cpu(const at::Tensor& x, bool to_uint8) {
  MMDAQ_CHECK(x.scalar_type() == at::kChar, "int8_channels_last: x must be int8, but got ",
              x.scalar_type());
  MMDAQ_CHECK(x.dim() >= 3 && x.dim() <= 5,
              "int8_channels_last: x must be [N, C, *S] with 1 to 3 spatial dims, but got shape ",
              x.sizes());
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t l = c == 0 || n == 0 ? 0 : x.numel() / (n * c);
  // Strides of [N, C, *S] stored as [N, *S, C].
  std::vector<int64_t> strides(x.dim());
  strides[1] = 1;
  int64_t step = c;
  for (int64_t d = x.dim() - 1; d >= 2; --d) {
    strides[d] = step;
    step *= x.size(d);
  }
  strides[0] = step;
  auto out = at::empty_strided(x.sizes(), strides, x.options());
  const uint8_t flip = to_uint8 ? 0x80u : 0x00u;
  if (to_uint8) out = out.view(at::kByte);
  if (x.numel() == 0) return out;
  const auto xc = x.contiguous();
  const int8_t* xp = xc.data_ptr<int8_t>();
  uint8_t* op = static_cast<uint8_t*>(out.data_ptr());
  // 64 positions per task: each channel plane is read in whole cache lines, and a task
  // touches each page once (16-position tasks read from a new page per channel: TLB misses).
  constexpr int64_t kTileL = 64;
  const int64_t tiles_l = (l + kTileL - 1) / kTileL;
  at::parallel_for(0, n * tiles_l, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t s = t / tiles_l, t0 = (t % tiles_l) * kTileL;
      const int64_t t1 = std::min(l, t0 + kTileL);
      const int8_t* in = xp + s * c * l;
      uint8_t* o = op + s * l * c;
      for (int64_t c0 = 0; c0 < c; c0 += kBlock) {
        const int64_t c1 = std::min(c, c0 + kBlock);
        for (int64_t l0 = t0; l0 < t1; l0 += kBlock) {
          const int64_t l1 = std::min(t1, l0 + kBlock);
          if (l1 - l0 == kBlock && c1 - c0 == kBlock) {
            full_block(in, o, c, l, l0, c0, flip);
            continue;
          }
          edge_block(in, o, c, l, l0, l1 - l0, c0, c1 - c0, flip);
        }
      }
    }
  });
  return out;
}

// Row o of int32_to_weight: [K, C] int32 -> [C, K] float times s.
MMDAQ_CPU_CLONES void weight_row(const int32_t* __restrict__ a, float* __restrict__ o, int64_t k,
                                 int64_t c, float s) {
  if (k == 1) {
    for (int64_t j = 0; j < c; ++j) o[j] = static_cast<float>(a[j]) * s;
    return;
  }
  for (int64_t j = 0; j < c; ++j) {
    for (int64_t kk = 0; kk < k; ++kk) o[j * k + kk] = static_cast<float>(a[kk * c + j]) * s;
  }
}

at::Tensor int32_to_weight_cpu(const at::Tensor& acc, const at::Tensor& scale,
                               at::IntArrayRef weight_shape) {
  MMDAQ_CHECK(acc.scalar_type() == at::kInt && acc.dim() == 2,
              "int32_to_weight: acc must be int32 [C_out, K * C_in], but got ", acc.scalar_type(),
              " of shape ", acc.sizes());
  MMDAQ_CHECK(weight_shape.size() >= 2,
              "int32_to_weight: weight_shape must be [C_out, C_in, *k], but got ", weight_shape);
  int64_t numel = 1;
  for (const int64_t d : weight_shape) numel *= d;
  const int64_t r = weight_shape[0], c = weight_shape[1];
  MMDAQ_CHECK(acc.size(0) == r && acc.numel() == numel, "int32_to_weight: acc ", acc.sizes(),
              " does not hold a weight of shape ", weight_shape);
  MMDAQ_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == r,
              "int32_to_weight: scale must be float32 with C_out = ", r, " values, but got ",
              scale.scalar_type(), " with ", scale.numel());
  auto out = at::empty(weight_shape, acc.options().dtype(at::kFloat));
  if (numel == 0) return out;
  const int64_t k = numel / (r * c);
  const auto ac = acc.contiguous();
  const auto sc = scale.contiguous();
  const int32_t* ap = ac.data_ptr<int32_t>();
  const float* sp = sc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(k * c, 1));
  at::parallel_for(0, r, grain, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) weight_row(ap + o * k * c, op + o * k * c, k, c, sp[o]);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) {
  m.impl("int8_channels_last", &int8_channels_last_cpu);
  m.impl("int32_to_weight", &int32_to_weight_cpu);
}
