// CUDA kernels of the quantization ops.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/types.h>

#include "../common/quant_utils.h"
#include "../quantize_args.h"

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
  const auto layout = mmdaq::check_quantize_args(x, scale, dim);
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty(x.sizes(), x.options().dtype(at::kChar));
  if (x.numel() == 0) {
    return out;
  }
  const auto xc = x.contiguous();
  const auto sc = scale.contiguous();
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((x.numel() + threads - 1) / threads, 65535);
  quantize_int8_kernel<<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      xc.data_ptr<float>(), sc.data_ptr<float>(), out.data_ptr<int8_t>(), x.numel(), layout.inner,
      layout.channels);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CUDA, m) { m.impl("quantize_int8", &quantize_int8_cuda); }
