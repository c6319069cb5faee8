// CUDA kernels of the quantization ops.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <tuple>

#include "../common/quant_utils.h"
#include "../quantize_args.h"

namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 4;

// Rows of `inner` elements share one scale (row r uses scale[r % channels]); blockIdx.y walks
// the rows, blockIdx.x the chunks of a row, so no thread divides a flat index. kPair: also the
// codes for the per-tensor step *tensor_scale into out2 (quantize_int8_pair), from the same load.
template <bool kPair>
__global__ void quantize_int8_kernel(const float* __restrict__ x, const float* __restrict__ scale,
                                     int8_t* __restrict__ out, int64_t rows, int64_t inner,
                                     int64_t channels, const float* __restrict__ tensor_scale,
                                     int8_t* __restrict__ out2) {
  const float s2 = kPair ? *tensor_scale : 0.0f;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const float s = scale[row % channels];
    const float* xr = x + row * inner;
    int8_t* orow = out + row * inner;
    int8_t* orow2 = kPair ? out2 + row * inner : nullptr;
    const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads * kPerThread;
    for (int64_t base = static_cast<int64_t>(blockIdx.x) * kThreads * kPerThread; base < inner;
         base += step) {
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) {  // kPerThread independent loads in flight
        const int64_t i = base + k * kThreads + threadIdx.x;
        if (i < inner) {
          const float v = __ldg(xr + i);
          orow[i] = mmdaq::quantize_code(v, s);
          if (kPair) orow2[i] = mmdaq::quantize_code(v, s2);
        }
      }
    }
  }
}

// Launches quantize_int8_kernel over io (out2 / tensor_scale: the pair's second copy, or null).
void launch_quantize(const mmdaq::QuantizeIO& io, int64_t numel, const float* tensor_scale,
                     int8_t* out2) {
  const int64_t inner = io.layout.inner;
  const int64_t rows = numel / inner;
  // Enough blocks to fill the GPU several times over; long rows get several chunks each.
  const int64_t target_blocks = 8 * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t chunks = (inner + kThreads * kPerThread - 1) / (kThreads * kPerThread);
  const int64_t grid_y = std::min<int64_t>(rows, 65535);
  const int64_t grid_x =
      std::max<int64_t>(1, std::min<int64_t>(chunks, (target_blocks + grid_y - 1) / grid_y));
  const dim3 grid(grid_x, grid_y);
  const auto stream = at::cuda::getCurrentCUDAStream();
  if (out2 == nullptr) {
    quantize_int8_kernel<false><<<grid, kThreads, 0, stream>>>(
        io.x.data_ptr<float>(), io.scale.data_ptr<float>(), io.out.data_ptr<int8_t>(), rows, inner,
        io.layout.channels, nullptr, nullptr);
  } else {
    quantize_int8_kernel<true><<<grid, kThreads, 0, stream>>>(
        io.x.data_ptr<float>(), io.scale.data_ptr<float>(), io.out.data_ptr<int8_t>(), rows, inner,
        io.layout.channels, tensor_scale, out2);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor quantize_int8_cuda(const at::Tensor& x, const at::Tensor& scale, int64_t dim) {
  const c10::cuda::CUDAGuard guard(x.device());
  auto io = mmdaq::prepare_quantize(x, scale, dim);
  if (x.numel() > 0) launch_quantize(io, x.numel(), nullptr, nullptr);
  return io.out;
}

std::tuple<at::Tensor, at::Tensor> quantize_int8_pair_cuda(const at::Tensor& x,
                                                           const at::Tensor& scale, int64_t dim,
                                                           const at::Tensor& tensor_scale) {
  const c10::cuda::CUDAGuard guard(x.device());
  auto io = mmdaq::prepare_quantize(x, scale, dim);
  mmdaq::check_pair_tensor_scale(x, tensor_scale);
  auto out2 = at::empty_like(io.out);
  const auto ts = tensor_scale.contiguous();
  if (x.numel() > 0) launch_quantize(io, x.numel(), ts.data_ptr<float>(), out2.data_ptr<int8_t>());
  return {io.out, out2};
}

// One thread per Philox block of 4 elements (grid-stride).
__global__ void quantize_int8_stochastic_kernel(const float* __restrict__ x,
                                                const float* __restrict__ scale,
                                                int8_t* __restrict__ out, int64_t numel,
                                                int64_t inner, int64_t channels, uint64_t seed,
                                                uint64_t offset) {
  const int64_t blocks = (numel + 3) / 4;
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < blocks;
       b += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    mmdaq::for_philox_block(seed, offset, b, numel, [&](int64_t i, float u) {
      out[i] = mmdaq::stochastic_code(__ldg(x + i), scale[(i / inner) % channels], u);
    });
  }
}

__global__ void philox_uniform_kernel(float* __restrict__ out, int64_t numel, uint64_t seed,
                                      uint64_t offset) {
  const int64_t blocks = (numel + 3) / 4;
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < blocks;
       b += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    mmdaq::for_philox_block(seed, offset, b, numel, [&](int64_t i, float u) { out[i] = u; });
  }
}

__global__ void clip_to_scale_kernel(const float* __restrict__ clip,
                                     const float* __restrict__ data_max, float* __restrict__ out,
                                     int64_t n, int qmax) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = mmdaq::clip_to_step(clip[i], data_max[i], qmax);
}

int64_t philox_grid(int64_t numel) {
  return std::max<int64_t>(1, std::min<int64_t>((numel / 4 + kThreads) / kThreads, 65535));
}

at::Tensor quantize_int8_stochastic_cuda(const at::Tensor& x, const at::Tensor& scale, int64_t dim,
                                         int64_t seed, int64_t offset) {
  const c10::cuda::CUDAGuard guard(x.device());
  auto io = mmdaq::prepare_quantize(x, scale, dim);
  const auto& layout = io.layout;
  const auto &out = io.out, &xc = io.x, &sc = io.scale;
  if (x.numel() == 0) {
    return out;
  }
  quantize_int8_stochastic_kernel<<<philox_grid(x.numel()), kThreads, 0,
                                    at::cuda::getCurrentCUDAStream()>>>(
      xc.data_ptr<float>(), sc.data_ptr<float>(), out.data_ptr<int8_t>(), x.numel(), layout.inner,
      layout.channels, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor philox_uniform_cuda(const at::Tensor& like, int64_t seed, int64_t offset) {
  const c10::cuda::CUDAGuard guard(like.device());
  auto out = at::empty(like.sizes(), like.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  philox_uniform_kernel<<<philox_grid(out.numel()), kThreads, 0,
                          at::cuda::getCurrentCUDAStream()>>>(out.data_ptr<float>(), out.numel(),
                                                              static_cast<uint64_t>(seed),
                                                              static_cast<uint64_t>(offset));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor clip_to_scale_cuda(const at::Tensor& clip, const at::Tensor& data_max, int64_t qmax) {
  mmdaq::check_clip_to_scale_args(clip, data_max, qmax);
  const c10::cuda::CUDAGuard guard(clip.device());
  const auto c = clip.contiguous();
  const auto d = data_max.contiguous();
  auto out = at::empty_like(c);
  if (c.numel() == 0) return out;
  clip_to_scale_kernel<<<(c.numel() + kThreads - 1) / kThreads, kThreads, 0,
                         at::cuda::getCurrentCUDAStream()>>>(
      c.data_ptr<float>(), d.data_ptr<float>(), out.data_ptr<float>(), c.numel(),
      static_cast<int>(qmax));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CUDA, m) {
  m.impl("clip_to_scale", &clip_to_scale_cuda);
  m.impl("quantize_int8", &quantize_int8_cuda);
  m.impl("quantize_int8_pair", &quantize_int8_pair_cuda);
  m.impl("quantize_int8_stochastic", &quantize_int8_stochastic_cuda);
  m.impl("philox_uniform", &philox_uniform_cuda);
}
