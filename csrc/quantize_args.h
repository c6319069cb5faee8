// Argument checks and [outer, C, inner] layout of quantize_int8, shared by the CPU and CUDA
// kernels (same wording as the fake in mmdaq/kernels/quantize.py).
#pragma once

#include <torch/types.h>

#include "common/check.h"

namespace mmdaq {

struct QuantizeLayout {
  int64_t channels;  // 1 for a per-tensor scale
  int64_t inner;     // elements after `dim`: the scale index of element i is (i / inner) % channels
};

inline QuantizeLayout check_quantize_args(const at::Tensor& x, const at::Tensor& scale,
                                          int64_t dim) {
  MMDAQ_CHECK(x.scalar_type() == at::kFloat, "quantize_int8: x must be float32, but got ",
              x.scalar_type());
  MMDAQ_CHECK(scale.scalar_type() == at::kFloat, "quantize_int8: scale must be float32, but got ",
              scale.scalar_type());
  MMDAQ_CHECK(scale.device() == x.device(), "quantize_int8: scale must be on ", x.device(),
              ", but got ", scale.device());
  const int64_t ndim = std::max<int64_t>(x.dim(), 1);
  MMDAQ_CHECK(dim >= -ndim && dim < ndim, "quantize_int8: dim must be in [", -ndim, ", ", ndim,
              "), but got ", dim);
  dim = dim < 0 ? dim + ndim : dim;
  const bool per_tensor = scale.numel() == 1;
  MMDAQ_CHECK(per_tensor || (x.dim() > 0 && scale.numel() == x.size(dim)),
              "quantize_int8: scale must have 1 or x.size(dim) = ", x.dim() > 0 ? x.size(dim) : 1,
              " elements, but got ", scale.numel());
  if (per_tensor) {
    return {1, std::max<int64_t>(x.numel(), 1)};
  }
  int64_t inner = 1;
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.size(d);
  return {x.size(dim), inner};
}

inline void check_clip_to_scale_args(const at::Tensor& clip, const at::Tensor& data_max,
                                     int64_t qmax) {
  MMDAQ_CHECK(clip.scalar_type() == at::kFloat && data_max.scalar_type() == at::kFloat,
              "clip_to_scale: clip and data_max must be float32, but got ", clip.scalar_type(),
              " and ", data_max.scalar_type());
  MMDAQ_CHECK(clip.sizes() == data_max.sizes() && clip.device() == data_max.device(),
              "clip_to_scale: clip and data_max must have one shape and device, but got ",
              clip.sizes(), " and ", data_max.sizes());
  MMDAQ_CHECK(qmax >= 1, "clip_to_scale: qmax must be >= 1, but got ", qmax);
}

// The second, per-tensor step of quantize_int8_pair: one float32 on x's device.
inline void check_pair_tensor_scale(const at::Tensor& x, const at::Tensor& tensor_scale) {
  MMDAQ_CHECK(tensor_scale.scalar_type() == at::kFloat && tensor_scale.numel() == 1 &&
                  tensor_scale.device() == x.device(),
              "quantize_int8_pair: tensor_scale must be one float32 on ", x.device(), ", but got ",
              tensor_scale.scalar_type(), " with ", tensor_scale.numel(), " elements on ",
              tensor_scale.device());
}

// The checked layout, the int8 output (x's shape) and contiguous inputs of a quantize kernel.
struct QuantizeIO {
  QuantizeLayout layout;
  at::Tensor out, x, scale;
};

inline QuantizeIO prepare_quantize(const at::Tensor& x, const at::Tensor& scale, int64_t dim) {
  const auto layout = check_quantize_args(x, scale, dim);
  return {layout, at::empty(x.sizes(), x.options().dtype(at::kChar)), x.contiguous(),
          scale.contiguous()};
}

}  // namespace mmdaq
