// CPU kernels of the quantization ops.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "../common/quant_utils.h"

namespace {

at::Tensor quantize_int8_cpu(const at::Tensor& x, const at::Tensor& scale, int64_t dim) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "quantize_int8: x must be float32, but got ",
              x.scalar_type());
  TORCH_CHECK(scale.scalar_type() == at::kFloat, "quantize_int8: scale must be float32, but got ",
              scale.scalar_type());
  const int64_t ndim = std::max<int64_t>(x.dim(), 1);
  TORCH_CHECK(dim >= -ndim && dim < ndim, "quantize_int8: dim must be in [", -ndim, ", ", ndim,
              "), but got ", dim);
  dim = dim < 0 ? dim + ndim : dim;
  const bool per_tensor = scale.numel() == 1;
  TORCH_CHECK(per_tensor || (x.dim() > 0 && scale.numel() == x.size(dim)),
              "quantize_int8: scale must have 1 or x.size(dim) = ", x.dim() > 0 ? x.size(dim) : 1,
              " elements, but got ", scale.numel());

  auto out = at::empty(x.sizes(), x.options().dtype(at::kChar));
  if (x.numel() == 0) {
    return out;
  }
  const auto xc = x.contiguous();
  const auto sc = scale.contiguous();
  const float* xp = xc.data_ptr<float>();
  const float* sp = sc.data_ptr<float>();
  int8_t* op = out.data_ptr<int8_t>();
  // View x as [outer, C, inner] with C = size(dim) so the scale index is (i / inner) % C.
  const int64_t channels = per_tensor ? 1 : x.size(dim);
  int64_t inner = 1;
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.size(d);
  if (per_tensor) inner = x.numel();
  at::parallel_for(0, x.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      op[i] = mmdaq::quantize_code(xp[i], sp[(i / inner) % channels]);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) { m.impl("quantize_int8", &quantize_int8_cpu); }
