// CUDA kernels of the quantization ops.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/types.h>

#include "../common/quant_utils.h"

namespace {

__global__ void quantize_int8_kernel(const float* __restrict__ x, const float* __restrict__ scale,
                                     int8_t* __restrict__ out, int64_t numel, int64_t inner,
                                     int64_t channels) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    out[i] = mmdaq::quantize_code(x[i], scale[(i / inner) % channels]);
  }
}

at::Tensor quantize_int8_cuda(const at::Tensor& x, const at::Tensor& scale, int64_t dim) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "quantize_int8: x must be float32, but got ",
              x.scalar_type());
  TORCH_CHECK(scale.scalar_type() == at::kFloat, "quantize_int8: scale must be float32, but got ",
              scale.scalar_type());
  TORCH_CHECK(scale.device() == x.device(), "quantize_int8: scale must be on ", x.device(),
              ", but got ", scale.device());
  const int64_t ndim = std::max<int64_t>(x.dim(), 1);
  TORCH_CHECK(dim >= -ndim && dim < ndim, "quantize_int8: dim must be in [", -ndim, ", ", ndim,
              "), but got ", dim);
  dim = dim < 0 ? dim + ndim : dim;
  const bool per_tensor = scale.numel() == 1;
  TORCH_CHECK(per_tensor || (x.dim() > 0 && scale.numel() == x.size(dim)),
              "quantize_int8: scale must have 1 or x.size(dim) = ", x.dim() > 0 ? x.size(dim) : 1,
              " elements, but got ", scale.numel());
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty(x.sizes(), x.options().dtype(at::kChar));
  if (x.numel() == 0) {
    return out;
  }
  const auto xc = x.contiguous();
  const auto sc = scale.contiguous();
  const int64_t channels = per_tensor ? 1 : x.size(dim);
  int64_t inner = 1;
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.size(d);
  if (per_tensor) inner = x.numel();
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((x.numel() + threads - 1) / threads, 65535);
  quantize_int8_kernel<<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      xc.data_ptr<float>(), sc.data_ptr<float>(), out.data_ptr<int8_t>(), x.numel(), inner,
      channels);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CUDA, m) { m.impl("quantize_int8", &quantize_int8_cuda); }
