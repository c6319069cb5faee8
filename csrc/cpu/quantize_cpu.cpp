// CPU kernels of the quantization ops.
#include <ATen/Parallel.h>

#include <algorithm>
#include <torch/library.h>
#include <torch/types.h>

#include "../common/quant_utils.h"
#include "../quantize_args.h"

namespace {

at::Tensor quantize_int8_cpu(const at::Tensor& x, const at::Tensor& scale, int64_t dim) {
  const auto layout = mmdaq::check_quantize_args(x, scale, dim);
  auto out = at::empty(x.sizes(), x.options().dtype(at::kChar));
  if (x.numel() == 0) {
    return out;
  }
  const auto xc = x.contiguous();
  const auto sc = scale.contiguous();
  const float* xp = xc.data_ptr<float>();
  const float* sp = sc.data_ptr<float>();
  int8_t* op = out.data_ptr<int8_t>();
  const int64_t inner = layout.inner;
  const int64_t channels = layout.channels;
  at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    // Walk the range one row (elements sharing a scale) at a time, so the inner loop has a
    // constant scale and no branches and the compiler vectorizes it.
    for (int64_t i = begin; i < end;) {
      const int64_t row = i / inner;
      const int64_t stop = std::min(end, (row + 1) * inner);
      mmdaq::quantize_row(xp + i, op + i, stop - i, sp[row % channels]);
      i = stop;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) { m.impl("quantize_int8", &quantize_int8_cpu); }
