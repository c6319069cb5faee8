// CUDA kernel of mmdaq::int32_to_channels_first: scale, bias and the [N*L, C] -> [N, C, L]
// transpose in one pass, through a shared-memory tile so that both the int32 reads (along C)
// and the float writes (along L) are coalesced.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/types.h>

#include "../common/check.h"

#include "../epilogue_args.h"

namespace {

constexpr int kTile = 32;
constexpr int kRows = 8;  // threads per tile column: each thread moves kTile / kRows values

__global__ void int32_to_channels_first_kernel(const int32_t* __restrict__ acc,
                                               const float* __restrict__ scale,
                                               const float* __restrict__ bias, bool per_channel,
                                               int64_t l, int64_t c, float* __restrict__ out) {
  __shared__ float tile[kTile][kTile + 1];  // +1: no bank conflicts on the transposed read
  const int64_t n = blockIdx.z;
  const int64_t l0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int32_t* a = acc + n * l * c;
  // Read acc[l0 + r, c0 + tx] (coalesced along C), scaled.
  for (int r = threadIdx.y; r < kTile; r += kRows) {
    const int64_t li = l0 + r, ci = c0 + threadIdx.x;
    if (li < l && ci < c) {
      const float s = per_channel ? scale[ci] : scale[0];
      const float b = bias != nullptr ? bias[ci] : 0.0f;
      // No FMA contraction: the reference (and the CPU kernel) rounds the product, then the sum.
      tile[r][threadIdx.x] = __fadd_rn(__fmul_rn(static_cast<float>(a[li * c + ci]), s), b);
    }
  }
  __syncthreads();
  // Write out[n, c0 + r, l0 + tx] (coalesced along L).
  float* o = out + n * c * l;
  for (int r = threadIdx.y; r < kTile; r += kRows) {
    const int64_t ci = c0 + r, li = l0 + threadIdx.x;
    if (li < l && ci < c) o[ci * l + li] = tile[threadIdx.x][r];
  }
}

at::Tensor int32_to_channels_first_cuda(const at::Tensor& acc, const at::Tensor& scale,
                                        const c10::optional<at::Tensor>& bias,
                                        at::IntArrayRef out_shape) {
  const auto dims = mmdaq::check_epilogue_args(acc, scale, bias, out_shape);
  MMDAQ_CHECK(acc.is_cuda() && scale.device() == acc.device() &&
                  (!bias.has_value() || bias->device() == acc.device()),
              "int32_to_channels_first: acc, scale and bias must be on one CUDA device");
  const c10::cuda::CUDAGuard guard(acc.device());
  auto out = at::empty(out_shape, acc.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  MMDAQ_CHECK(dims.n <= 65535, "int32_to_channels_first: batch ", dims.n,
              " exceeds the CUDA grid (65535)");
  const auto ac = acc.contiguous();
  const auto sc = scale.contiguous();
  const auto bc = bias.has_value() ? bias->contiguous() : at::Tensor();
  const dim3 grid((dims.l + kTile - 1) / kTile, (dims.c + kTile - 1) / kTile, dims.n);
  const dim3 block(kTile, kRows);
  int32_to_channels_first_kernel<<<grid, block, 0, at::cuda::getCurrentCUDAStream()>>>(
      ac.data_ptr<int32_t>(), sc.data_ptr<float>(), bc.defined() ? bc.data_ptr<float>() : nullptr,
      sc.numel() > 1, dims.l, dims.c, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CUDA, m) {
  m.impl("int32_to_channels_first", &int32_to_channels_first_cuda);
}
