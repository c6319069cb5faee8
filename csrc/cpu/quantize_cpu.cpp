// CPU kernels of the quantization ops.
#include <ATen/Parallel.h>

#include <torch/library.h>
#include <torch/types.h>
#include <algorithm>
#include <cstring>
#include <tuple>

#include "../common/check.h"
#include "../common/cpu_clones.h"
#include "../common/quant_utils.h"
#include "../quantize_args.h"

namespace {

// Elements [begin, end) of quantize_int8, one row (elements sharing a scale) at a time, so the
// inner loop has a constant scale and no branches and vectorizes.
MMDAQ_CPU_CLONES void quantize_range(const float* xp, const float* sp, int8_t* op, int64_t begin,
                                     int64_t end, int64_t inner, int64_t channels) {
  for (int64_t i = begin; i < end;) {
    const int64_t row = i / inner;
    const int64_t stop = std::min(end, (row + 1) * inner);
    mmdaq::quantize_row(xp + i, op + i, stop - i, sp[row % channels]);
    i = stop;
  }
}

at::Tensor quantize_int8_cpu(const at::Tensor& x, const at::Tensor& scale, int64_t dim) {
  auto io = mmdaq::prepare_quantize(x, scale, dim);
  const auto& layout = io.layout;
  if (x.numel() == 0) {
    return io.out;
  }
  const float* xp = io.x.data_ptr<float>();
  const float* sp = io.scale.data_ptr<float>();
  int8_t* op = io.out.data_ptr<int8_t>();
  const int64_t inner = layout.inner;
  const int64_t channels = layout.channels;
  at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    quantize_range(xp, sp, op, begin, end, inner, channels);
  });
  return io.out;
}

// quantize_range for a per-channel step sp (and channels) and a per-tensor step st together.
MMDAQ_CPU_CLONES void quantize_range_pair(const float* xp, const float* sp, float st, int8_t* op,
                                          int8_t* tp, int64_t begin, int64_t end, int64_t inner,
                                          int64_t channels) {
  for (int64_t i = begin; i < end;) {
    const int64_t row = i / inner;
    const int64_t stop = std::min(end, (row + 1) * inner);
    mmdaq::quantize_row_pair(xp + i, op + i, tp + i, stop - i, sp[row % channels], st);
    i = stop;
  }
}

std::tuple<at::Tensor, at::Tensor> quantize_int8_pair_cpu(const at::Tensor& x,
                                                          const at::Tensor& scale, int64_t dim,
                                                          const at::Tensor& tensor_scale) {
  auto io = mmdaq::prepare_quantize(x, scale, dim);
  mmdaq::check_pair_tensor_scale(x, tensor_scale);
  auto tensor_out = at::empty_like(io.out);
  if (x.numel() == 0) {
    return {io.out, tensor_out};
  }
  const float st = tensor_scale.item<float>();
  const float* xp = io.x.data_ptr<float>();
  const float* sp = io.scale.data_ptr<float>();
  int8_t* op = io.out.data_ptr<int8_t>();
  int8_t* tp = tensor_out.data_ptr<int8_t>();
  const int64_t inner = io.layout.inner, channels = io.layout.channels;
  at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    quantize_range_pair(xp, sp, st, op, tp, begin, end, inner, channels);
  });
  return {io.out, tensor_out};
}

at::Tensor quantize_int8_stochastic_cpu(const at::Tensor& x, const at::Tensor& scale, int64_t dim,
                                        int64_t seed, int64_t offset) {
  auto io = mmdaq::prepare_quantize(x, scale, dim);
  const auto& layout = io.layout;
  if (x.numel() == 0) {
    return io.out;
  }
  const float* xp = io.x.data_ptr<float>();
  const float* sp = io.scale.data_ptr<float>();
  int8_t* op = io.out.data_ptr<int8_t>();
  const int64_t n = x.numel(), inner = layout.inner, channels = layout.channels;
  // Tasks of whole Philox blocks (4 elements), so each block is generated once.
  at::parallel_for(0, (n + 3) / 4, 1 << 12, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      mmdaq::for_philox_block(seed, offset, b, n, [&](int64_t i, float u) {
        op[i] = mmdaq::stochastic_code(xp[i], sp[(i / inner) % channels], u);
      });
    }
  });
  return io.out;
}

at::Tensor philox_uniform_cpu(const at::Tensor& like, int64_t seed, int64_t offset) {
  auto out = at::empty(like.sizes(), like.options().dtype(at::kFloat));
  float* op = out.data_ptr<float>();
  const int64_t n = out.numel();
  at::parallel_for(0, (n + 3) / 4, 1 << 12, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      mmdaq::for_philox_block(seed, offset, b, n, [&](int64_t i, float u) { op[i] = u; });
    }
  });
  return out;
}

at::Tensor clip_to_scale_cpu(const at::Tensor& clip, const at::Tensor& data_max, int64_t qmax) {
  mmdaq::check_clip_to_scale_args(clip, data_max, qmax);
  const auto c = clip.contiguous();
  const auto d = data_max.contiguous();
  auto out = at::empty_like(c);
  const float* cp = c.data_ptr<float>();
  const float* dp = d.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t i = 0; i < c.numel(); ++i) {
    op[i] = mmdaq::clip_to_step(cp[i], dp[i], static_cast<int>(qmax));
  }
  return out;
}

}  // namespace

// Bits of the largest |x| over [begin, end): the sign bit cleared, the bit patterns of
// non-negative floats order as their values, and every NaN's lies above Inf's, so an integer
// max (which vectorizes) propagates NaN as the float abs-max does.
MMDAQ_CPU_CLONES uint32_t abs_max_bits(const float* __restrict__ x, int64_t begin, int64_t end) {
  uint32_t m = 0;
  for (int64_t i = begin; i < end; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, sizeof(b));
    b &= 0x7fffffffu;
    m = b > m ? b : m;
  }
  return m;
}

std::tuple<at::Tensor, at::Tensor> quantize_per_tensor_int8_cpu(const at::Tensor& x) {
  MMDAQ_CHECK(x.scalar_type() == at::kFloat && x.dim() > 0,
              "quantize_per_tensor_int8: x must be a float32 tensor with at least one dim, but "
              "got ",
              x.scalar_type(), " of shape ", x.sizes());
  const auto xc = x.contiguous();
  const float* xp = xc.data_ptr<float>();
  const uint32_t bits = at::parallel_reduce(
      0, xc.numel(), 1 << 16, uint32_t{0},
      [&](int64_t begin, int64_t end, uint32_t m) {
        return std::max(m, abs_max_bits(xp, begin, end));
      },
      [](uint32_t a, uint32_t b) { return std::max(a, b); });
  float data_max;
  std::memcpy(&data_max, &bits, sizeof(data_max));
  auto scale = at::empty({}, x.options());
  scale.fill_(mmdaq::clip_to_step(data_max, data_max, mmdaq::kInt8MaxCode));
  return {quantize_int8_cpu(x, scale, 0), scale};
}

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) {
  m.impl("clip_to_scale", &clip_to_scale_cpu);
  m.impl("quantize_per_tensor_int8", &quantize_per_tensor_int8_cpu);
  m.impl("quantize_int8", &quantize_int8_cpu);
  m.impl("quantize_int8_pair", &quantize_int8_pair_cpu);
  m.impl("quantize_int8_stochastic", &quantize_int8_stochastic_cpu);
  m.impl("philox_uniform", &philox_uniform_cpu);
}
