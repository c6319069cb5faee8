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
MMDAQ_CPU_CLONES void full_block(const int8_t* __restrict__ in, uint8_t* __restrict__ o,
                                 int64_t c, int64_t l, int64_t l0, int64_t c0, uint8_t flip) {
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

at::Tensor int8_channels_last_cpu(const at::Tensor& x, bool to_uint8) {
  MMDAQ_CHECK(x.scalar_type() == at::kChar,
              "int8_channels_last: x must be int8, but got ", x.scalar_type());
  MMDAQ_CHECK(x.dim() >= 3 && x.dim() <= 5,
              "int8_channels_last: x must be [N, C, *S] with 1 to 3 spatial dims, "
              "but got shape ", x.sizes());
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
          for (int64_t i = l0; i < l1; ++i) {  // edge blocks
            for (int64_t ch = c0; ch < c1; ++ch) {
              o[i * c + ch] = static_cast<uint8_t>(in[ch * l + i]) ^ flip;
            }
          }
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) {
  m.impl("int8_channels_last", &int8_channels_last_cpu);
}
