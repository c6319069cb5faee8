// Argument checks of int32_to_channels_first, shared by the CPU and CUDA kernels.
#pragma once

#include <torch/types.h>

#include "common/check.h"

namespace mmdaq {

struct EpilogueDims {
  int64_t n, c, l;  // out_shape = [N, C, *S], L = prod S
};

inline EpilogueDims check_epilogue_args(const at::Tensor& acc, const at::Tensor& scale,
                                        const c10::optional<at::Tensor>& bias,
                                        at::IntArrayRef out_shape, bool allow_float_acc = false) {
  // The CPU kernel also takes float32 accumulators (integer-valued, from oneDNN).
  const bool dtype_ok =
      acc.scalar_type() == at::kInt || (allow_float_acc && acc.scalar_type() == at::kFloat);
  MMDAQ_CHECK(dtype_ok && acc.dim() == 2, "int32_to_channels_first: acc must be a 2-d ",
              allow_float_acc ? "int32 or float32" : "int32", " tensor [N*L, C], but got ",
              acc.scalar_type(), " of shape ", acc.sizes());
  MMDAQ_CHECK(out_shape.size() >= 2, "int32_to_channels_first: out_shape must be [N, C, *S]");
  const int64_t n = out_shape[0], c = out_shape[1];
  int64_t l = 1;
  for (size_t d = 2; d < out_shape.size(); ++d) l *= out_shape[d];
  MMDAQ_CHECK(acc.size(0) == n * l && acc.size(1) == c, "int32_to_channels_first: acc of shape ",
              acc.sizes(), " does not match out_shape ", out_shape);
  MMDAQ_CHECK(scale.scalar_type() == at::kFloat && (scale.numel() == 1 || scale.numel() == c),
              "int32_to_channels_first: scale must be float32 with 1 or C = ", c,
              " elements, but got ", scale.scalar_type(), " with ", scale.numel());
  if (bias.has_value()) {
    MMDAQ_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == c,
                "int32_to_channels_first: bias must be float32 with C = ", c, " elements");
  }
  return {n, c, l};
}

}  // namespace mmdaq
