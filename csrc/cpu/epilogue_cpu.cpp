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

// One tile: positions [l0, l1) x channels [c0, c1) of one sample. (8 x 8 blocks turned
// around in a local buffer were measured no faster: at 64 channels the pass costs about 1.7 ms
// per 1.6 M values either way, at 256 channels it is bound by memory.)
template <typename Acc>
MMDAQ_CPU_CLONES void tile(const Acc* __restrict__ a, const float* __restrict__ sp,
                           const float* __restrict__ bp, float* __restrict__ o, int64_t c,
                           int64_t l, int64_t l0, int64_t l1) {
  for (int64_t c0 = 0; c0 < c; c0 += kTileC) {
    const int64_t c1 = std::min(c, c0 + kTileC);
    for (int64_t ch = c0; ch < c1; ++ch) {
      const float m = sp[ch], b = bp[ch];
      float* row = o + ch * l;
      for (int64_t i = l0; i < l1; ++i) row[i] = static_cast<float>(a[i * c + ch]) * m + b;
    }
  }
}

template <typename Acc>
void channels_first_tiles(const Acc* ap, const float* sp, const float* bp, float* op, int64_t n,
                          int64_t c, int64_t l) {
  const int64_t tiles_l = (l + kTileL - 1) / kTileL;
  at::parallel_for(0, n * tiles_l, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t s = t / tiles_l, l0 = (t % tiles_l) * kTileL;
      tile(ap + s * l * c, sp, bp, op + s * c * l, c, l, l0, std::min(l, l0 + kTileL));
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
