// CUDA kernel of mmdaq::grad_channel_stats: one thread block per channel of the
// [outer, C, inner] layout, the same statistics as the CPU kernel (cpu/channel_stats_cpu.cpp):
// pass 1 abs-max, finiteness, the second moment and the exact zeros; pass 2 P(|g|/max > sigma) and
// the histogram of x = |g| * (1 / max) in shared memory; then the objective's arg-min over the bin
// edges with a block-wide suffix scan. The channel's values are read twice; at training batch sizes
// a channel (N*H*W floats) is a few hundred KiB to a few MiB, so pass 2 is served mostly by L2.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/types.h>

#include "../channel_stats_args.h"

#include <cmath>
#include <limits>
#include <tuple>

namespace {

using Stats = mmdaq::ChannelStats;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxBins = 4096;  // shared-memory histogram: 4096 * (4 + 8) bytes = 48 KiB

// Calls fn(value) for every element of channel c, spread over the block's threads. Rows of
// `inner` contiguous values are walked with the threads along the row when rows are long,
// else the (outer, inner) index is flattened.
template <typename Fn>
__device__ __forceinline__ void for_each_in_channel(const float* __restrict__ g, int64_t outer,
                                                    int64_t channels, int64_t inner, int64_t c,
                                                    Fn&& fn) {
  if (inner >= kThreads / 2) {
    for (int64_t o = 0; o < outer; ++o) {
      const float* row = g + (o * channels + c) * inner;
      for (int64_t i = threadIdx.x; i < inner; i += kThreads) fn(__ldg(row + i));
    }
  } else {
    const int64_t count = outer * inner;
    for (int64_t j = threadIdx.x; j < count; j += kThreads) {
      const int64_t o = j / inner, i = j - o * inner;
      fn(__ldg(g + (o * channels + c) * inner + i));
    }
  }
}

// Block-wide reductions through one shared slot per warp. Every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* smem) {
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // smem may still be read by a previous reduction
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  T r = smem[0];
  for (int w = 1; w < kWarps; ++w) r = op(r, smem[w]);
  return r;
}

struct MaxOp {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct OrOp {
  __device__ int operator()(int a, int b) const { return a | b; }
};
template <typename T>
struct SumOp {
  __device__ T operator()(T a, T b) const { return a + b; }
};

// Objective weight w_b = n_b exp(alpha (mean_b - 1)) of bin b and its mean; bin 0 without the
// channel's exact zeros (exact at any clip), as objective_ratio in the CPU kernel.
__device__ __forceinline__ double bin_weight(const unsigned int* counts, const double* sums, int b,
                                             double alpha, double zeros, double* mean) {
  double n = static_cast<double>(counts[b]);
  if (b == 0) n = n > zeros ? n - zeros : 0.0;
  *mean = sums[b] / (n > 1.0 ? n : 1.0);
  return n * exp(alpha * (*mean - 1.0));
}

__global__ void __launch_bounds__(kThreads)
    grad_channel_stats_kernel(const float* __restrict__ g, int64_t outer, int64_t channels,
                              int64_t inner, int num_bins, double alpha, int max_code,
                              bool keep_hist, float* __restrict__ abs_max,
                              float* __restrict__ sigma_out, float* __restrict__ frac_out,
                              float* __restrict__ ratio_out, double* __restrict__ cnt_out,
                              double* __restrict__ sum_out, long long* __restrict__ zeros_out) {
  extern __shared__ unsigned char smem_raw[];
  // Layout: [num_bins] uint32 counts | pad | [num_bins] double sums (reused by the clip search
  // as the bin weights w, w * mean) | reduction scratch.
  auto* counts = reinterpret_cast<unsigned int*>(smem_raw);
  const size_t sum_offset = ((static_cast<size_t>(num_bins) * 4 + 15) / 16) * 16;
  auto* sums = reinterpret_cast<double*>(smem_raw + sum_offset);
  __shared__ double red_d[kWarps];
  __shared__ float red_f[kWarps];
  __shared__ int red_i[kWarps];
  __shared__ long long red_l[kWarps];
  __shared__ double scan_w[kThreads], scan_wx[kThreads];
  __shared__ double best_e[kWarps];
  __shared__ int best_j[kWarps];

  const int64_t c = blockIdx.x;
  const int64_t count = outer * inner;
  const float nan = __int_as_float(0x7fc00000);

  // Pass 1: abs-max, finiteness (bit 0: non-finite, bit 1: NaN), the raw second moment and
  // the exact zeros (+0 and -0; NaN is not one).
  float m = 0.0f;
  int flags = 0;
  double sq = 0.0;
  long long zeros = 0;
  for_each_in_channel(g, outer, channels, inner, c, [&](float v) {
    const float a = fabsf(v);
    flags |= (isfinite(a) ? 0 : 1) | (isnan(v) ? 2 : 0);
    m = a > m ? a : m;
    sq += static_cast<double>(v) * v;
    zeros += v == 0.0f;
  });
  flags = block_reduce(flags, OrOp(), red_i);
  zeros = block_reduce(zeros, SumOp<long long>(), red_l);
  if (threadIdx.x == 0) zeros_out[c] = zeros;
  if (flags) {  // NaN/Inf: visible downstream, no statistics (matches the reference)
    if (threadIdx.x == 0) {
      abs_max[c] = (flags & 2) ? nan : __int_as_float(0x7f800000);
      sigma_out[c] = nan;
      frac_out[c] = nan;
      ratio_out[c] = nan;
    }
    return;
  }
  m = block_reduce(m, MaxOp(), red_f);
  sq = block_reduce(sq, SumOp<double>(), red_d);
  if (m == 0.0f) {  // all-zero channel: sigma 0, nothing above it, everything in bin 0
    if (threadIdx.x == 0) {
      abs_max[c] = 0.0f;
      sigma_out[c] = 0.0f;
      frac_out[c] = 0.0f;
      ratio_out[c] = 1.0f;
      if (keep_hist) cnt_out[c * num_bins] = static_cast<double>(count);
    }
    return;
  }
  const float sigma_rel = static_cast<float>(sqrt(sq / count) / static_cast<double>(m));
  const float inv = 1.0f / m;  // x = |g| * (1 / max), exactly as channel_histograms does
  // Where 1 / max overflows (abs-max below about 2**-128), x is the quotient instead: inf and
  // NaN would give bins out of range.
  const bool divide = isinf(inv);
  const float bins = static_cast<float>(num_bins);

  // Pass 2: P(x > sigma) and the histogram of x.
  for (int b = threadIdx.x; b < num_bins; b += kThreads) {
    counts[b] = 0u;
    sums[b] = 0.0;
  }
  __syncthreads();
  long long above = 0;
  for_each_in_channel(g, outer, channels, inner, c, [&](float v) {
    const float x = divide ? fabsf(v) / m : fabsf(v) * inv;
    above += x > sigma_rel;
    if (num_bins > 0) {
      int b = static_cast<int>(x * bins);
      b = b < num_bins - 1 ? b : num_bins - 1;
      atomicAdd(counts + b, 1u);
      atomicAdd(sums + b, static_cast<double>(x));
    }
  });
  above = block_reduce(above, SumOp<long long>(), red_l);
  if (threadIdx.x == 0) {
    abs_max[c] = m;
    sigma_out[c] = sigma_rel * m;
    frac_out[c] = static_cast<float>(static_cast<double>(above) / count);
    ratio_out[c] = 1.0f;
  }
  if (num_bins == 0) return;
  __syncthreads();
  if (keep_hist) {
    for (int b = threadIdx.x; b < num_bins; b += kThreads) {
      cnt_out[c * num_bins + b] = static_cast<double>(counts[b]);
      sum_out[c * num_bins + b] = sums[b];
    }
  }

  // Clip search, the arithmetic of objective_ratio in the CPU kernel: candidate j (clip
  // u = (j + 1) / B) costs sum_{b > j} (wx_b - u w_b) + u / (4 max_code) * rounded_j, with
  // w_b = n_b exp(alpha (mean_b - 1)) (n_0 without the exact zeros) and rounded_j the weight of
  // the bins <= j (less the exact abs-max value for j = B - 1). Each thread owns a run of
  // consecutive bins; an exclusive scan of the runs' totals from the top gives every candidate
  // its suffix sums.
  const double zeros_d = static_cast<double>(zeros);
  const int per = (num_bins + kThreads - 1) / kThreads;
  const int b0 = threadIdx.x * per, b1 = min(num_bins, b0 + per);
  double run_w = 0.0, run_wx = 0.0;
  for (int b = b0; b < b1; ++b) {
    double mean;
    const double w = bin_weight(counts, sums, b, alpha, zeros_d, &mean);
    run_w += w;
    run_wx += w * mean;
  }
  scan_w[threadIdx.x] = run_w;
  scan_wx[threadIdx.x] = run_wx;
  __syncthreads();
  // Inclusive suffix scan over threads (Hillis-Steele; kThreads entries, log2 steps).
  for (int off = 1; off < kThreads; off <<= 1) {
    const int src = threadIdx.x + off;
    const double add_w = src < kThreads ? scan_w[src] : 0.0;
    const double add_wx = src < kThreads ? scan_wx[src] : 0.0;
    __syncthreads();
    scan_w[threadIdx.x] += add_w;
    scan_wx[threadIdx.x] += add_wx;
    __syncthreads();
  }
  const double total = scan_w[0];
  double above_w = scan_w[threadIdx.x] - run_w;  // bins after this thread's run
  double above_wx = scan_wx[threadIdx.x] - run_wx;
  double best = std::numeric_limits<double>::infinity();
  int arg = num_bins - 1;
  for (int j = b1 - 1; j >= b0; --j) {
    const double u = static_cast<double>(j + 1) / num_bins;
    double rounded = total - above_w;
    if (j == num_bins - 1) rounded -= 1.0;  // the abs-max value is exact at u = 1
    rounded = rounded > 0.0 ? rounded : 0.0;
    const double energy = above_wx - u * above_w + u / (4.0 * max_code) * rounded;
    if (energy < best) {  // strict: ties keep the larger u, as the CPU loop does
      best = energy;
      arg = j;
    }
    double mean;
    const double w = bin_weight(counts, sums, j, alpha, zeros_d, &mean);
    above_w += w;
    above_wx += w * mean;
  }
  // Block arg-min; ties go to the larger j.
  for (int off = 16; off > 0; off >>= 1) {
    const double e = __shfl_down_sync(0xffffffffu, best, off);
    const int a = __shfl_down_sync(0xffffffffu, arg, off);
    if (e < best || (e == best && a > arg)) {
      best = e;
      arg = a;
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    best_e[warp] = best;
    best_j[warp] = arg;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double e = best_e[0];
    int a = best_j[0];
    for (int w = 1; w < kWarps; ++w) {
      if (best_e[w] < e || (best_e[w] == e && best_j[w] > a)) {
        e = best_e[w];
        a = best_j[w];
      }
    }
    ratio_out[c] = static_cast<float>(static_cast<double>(a + 1) / num_bins);
  }
}

Stats grad_channel_stats_cuda(const at::Tensor& g, int64_t dim, int64_t num_bins, double alpha,
                              int64_t max_code, bool return_hist) {
  const auto layout = mmdaq::check_channel_stats_args(g, dim, num_bins, alpha, max_code, kMaxBins);
  const c10::cuda::CUDAGuard guard(g.device());
  const int64_t outer = layout.outer, channels = layout.channels, inner = layout.inner;
  const int64_t kept_bins = return_hist ? num_bins : 0;
  auto outputs = mmdaq::make_channel_stats_outputs(g, channels, kept_bins);
  auto& [abs_max, sigma, frac, ratio, hist_count, hist_sum, zero_count] = outputs;
  if (channels == 0 || outer * inner == 0) {
    return outputs;
  }
  MMDAQ_CHECK(channels <= std::numeric_limits<int32_t>::max(),
              "grad_channel_stats: too many channels for one grid: ", channels);
  const auto gc = g.contiguous();
  const size_t smem = ((static_cast<size_t>(num_bins) * 4 + 15) / 16) * 16 + num_bins * 8;
  auto kernel = grad_channel_stats_kernel;
  if (smem + sizeof(double) * 2 * kThreads + 1024 > 48 * 1024) {  // dynamic + static > 48 KiB
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
  }
  kernel<<<static_cast<unsigned int>(channels), kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(
      gc.data_ptr<float>(), outer, channels, inner, static_cast<int>(num_bins), alpha,
      static_cast<int>(max_code), kept_bins > 0, abs_max.data_ptr<float>(), sigma.data_ptr<float>(),
      frac.data_ptr<float>(), ratio.data_ptr<float>(),
      kept_bins > 0 ? hist_count.data_ptr<double>() : nullptr,
      kept_bins > 0 ? hist_sum.data_ptr<double>() : nullptr,
      reinterpret_cast<long long*>(zero_count.data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CUDA, m) { m.impl("grad_channel_stats", &grad_channel_stats_cuda); }
