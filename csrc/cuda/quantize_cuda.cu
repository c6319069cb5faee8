// CUDA kernels of the quantization ops.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>

#include "../common/quant_utils.h"
#include "../quantize_args.h"

namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 4;

// Rows of `inner` elements share one scale (row r uses scale[r % channels]); blockIdx.y walks
// the rows, blockIdx.x the chunks of a row, so no thread divides a flat index.
__global__ void quantize_int8_kernel(const float* __restrict__ x, const float* __restrict__ scale,
                                     int8_t* __restrict__ out, int64_t rows, int64_t inner,
                                     int64_t channels) {
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const float s = scale[row % channels];
    const float* xr = x + row * inner;
    int8_t* orow = out + row * inner;
    const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads * kPerThread;
    for (int64_t base = static_cast<int64_t>(blockIdx.x) * kThreads * kPerThread; base < inner;
         base += step) {
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) {  // kPerThread independent loads in flight
        const int64_t i = base + k * kThreads + threadIdx.x;
        if (i < inner) orow[i] = mmdaq::quantize_code(__ldg(xr + i), s);
      }
    }
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
  const int64_t inner = layout.inner;
  const int64_t rows = x.numel() / inner;
  // Enough blocks to fill the GPU several times over; long rows get several chunks each.
  const int64_t target_blocks = 8 * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t chunks = (inner + kThreads * kPerThread - 1) / (kThreads * kPerThread);
  const int64_t grid_y = std::min<int64_t>(rows, 65535);
  const int64_t grid_x =
      std::max<int64_t>(1, std::min<int64_t>(chunks, (target_blocks + grid_y - 1) / grid_y));
  quantize_int8_kernel<<<dim3(grid_x, grid_y), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      xc.data_ptr<float>(), sc.data_ptr<float>(), out.data_ptr<int8_t>(), rows, inner,
      layout.channels);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CUDA, m) { m.impl("quantize_int8", &quantize_int8_cuda); }
