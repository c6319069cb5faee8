// CPU kernel of mmdaq::grad_channel_stats: every statistic DAQ's clipping needs from G_Y, read
// straight from the [outer, C, inner] layout (no channel-major copy), one channel per task.
// A channel's values are read twice (abs-max and second moment; count and histogram); for the
// usual sizes (N*H*W floats, tens to hundreds of KiB) the second pass hits the cache. Both
// passes' arithmetic is vectorized (cpu_clones.h); the histogram adds stay scalar. The
// clip search then runs on the channel's histogram in O(num_bins), in registers and a local
// buffer, the same arithmetic as objective_curve_from_histograms in
// mmdaq/quantization/histogram_clip.py (its exp as a table times a polynomial, equal to
// rounding: see BinExp). Pass 1 also counts the exact zeros: they quantize
// exactly at any clip, so the objective takes them out of bin 0 (no rounding error charged).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "../channel_stats_args.h"
#include "../common/cpu_clones.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

namespace {

using Stats = mmdaq::ChannelStats;

// Pass 1 over a row of a channel: abs-max, the raw second moment (double: no overflow for any
// float), exact zeros (+0 and -0; NaN is not one) and the number of NaN/+-Inf values (v - v is
// NaN for those). Written so that it vectorizes: the abs-max as the integer max of the bit
// patterns without the sign (the same order as the values for finite floats; a channel with a
// non-finite value gets its abs-max from the non-finite branch), eight independent double
// sums (the order of a double sum moves sigma by far less than float32's rounding).
struct RowMoments {
  uint32_t abs_max_bits = 0;
  double sq = 0.0;
  int64_t zeros = 0, non_finite = 0;
};

MMDAQ_CPU_CLONES void add_row_moments(const float* __restrict__ row, int64_t n,
                                      RowMoments& acc) {
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(row);
  uint32_t m = acc.abs_max_bits;
  int64_t zeros = 0, non_finite = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = bits[i] & 0x7fffffffu;
    m = a > m ? a : m;
    zeros += row[i] == 0.0f;
    non_finite += !(row[i] - row[i] == 0.0f);
  }
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) s[k] += static_cast<double>(row[i + k]) * row[i + k];
  }
  for (; i < n; ++i) s[0] += static_cast<double>(row[i]) * row[i];
  acc.abs_max_bits = m;
  acc.zeros += zeros;
  acc.non_finite += non_finite;
  acc.sq += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// x = |g| / max as channel_histograms computes it: |g| * (1 / max), or the quotient where
// 1 / max overflows (a channel whose abs-max is below about 2**-128, which early detector
// training produces: inf and NaN there gave bins out of range).
template <bool kDivide>
inline float relative(float v, float inv, float m) {
  return kDivide ? std::fabs(v) / m : std::fabs(v) * inv;
}

// P(x > sigma) count of a row without a histogram (num_bins == 0).
template <bool kDivide>
MMDAQ_CPU_CLONES int64_t row_above(const float* __restrict__ row, int64_t n, float inv, float m,
                                   float sigma_rel) {
  int64_t above = 0;
  for (int64_t i = 0; i < n; ++i) above += relative<kDivide>(row[i], inv, m) > sigma_rel;
  return above;
}

// Pass 2, vectorized half: x, its bin and the count of x > sigma. The scatter into the
// histogram stays scalar.
template <bool kDivide>
MMDAQ_CPU_CLONES int64_t row_bins(const float* __restrict__ row, int64_t n, float inv, float m,
                                  float bins, int32_t last_bin, float sigma_rel,
                                  float* __restrict__ xs, int32_t* __restrict__ idx) {
  int64_t above = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float x = relative<kDivide>(row[i], inv, m);
    xs[i] = x;
    above += x > sigma_rel;
    const int32_t b = static_cast<int32_t>(x * bins);
    idx[i] = b < last_bin ? b : last_bin;
  }
  return above;
}

// exp(alpha * (b / B - 1)) for every bin b, shared by all channels of a call, and whether the
// bin weights may use it: exp(alpha * (mean - 1)) = table[b] * exp(d) with d = alpha * (mean -
// b / B) in [0, alpha / B] (the mean of a bin's x lies in the bin), and for d <= 1/8 a
// degree-12 Taylor polynomial gives exp(d) to well below a double's rounding (the remainder
// (1/8)**13 / 13! is 3e-22): unlike std::exp, it vectorizes.
// Also the candidate clips u_j = (j + 1) / B and u_j / (4 Q) of the search, divided once per
// call rather than twice per bin and channel (the same quotients).
struct BinExp {
  std::vector<double> table, lower, u, u_rounding;
  double alpha = 0.0;
  bool polynomial = false;
};

BinExp make_bin_exp(int64_t bins, double alpha, int64_t max_code) {
  BinExp e;
  e.u.resize(bins);
  e.u_rounding.resize(bins);
  for (int64_t j = 0; j < bins; ++j) {
    e.u[j] = static_cast<double>(j + 1) / bins;
    e.u_rounding[j] = e.u[j] / (4.0 * max_code);
  }
  e.alpha = alpha;
  e.polynomial = bins > 0 && alpha / static_cast<double>(bins) <= 0.125;
  if (e.polynomial) {
    const double inv_bins = 1.0 / static_cast<double>(bins);
    e.table.resize(bins);
    e.lower.resize(bins);
    for (int64_t b = 0; b < bins; ++b) {
      e.lower[b] = static_cast<double>(b) * inv_bins;
      e.table[b] = std::exp(alpha * (e.lower[b] - 1.0));
    }
  }
  return e;
}

// Weight n * exp(alpha * (mean - 1)) of a bin of n values with mean `mean` >= `lower` (the
// bin's lower edge b / B), and 0 for an empty bin.
// (Inlined into the caller's ISA clone: a call to a clone would keep the loop scalar.)
inline __attribute__((always_inline)) double bin_weight(double n, double mean, double lower,
                                                        double table, double alpha) {
  const double d = alpha * (mean - lower);
  double p = 1.0 / 479001600.0;  // 1 / 12!, Horner down to 1
  p = p * d + 1.0 / 39916800.0;
  p = p * d + 1.0 / 3628800.0;
  p = p * d + 1.0 / 362880.0;
  p = p * d + 1.0 / 40320.0;
  p = p * d + 1.0 / 5040.0;
  p = p * d + 1.0 / 720.0;
  p = p * d + 1.0 / 120.0;
  p = p * d + 1.0 / 24.0;
  p = p * d + 1.0 / 6.0;
  p = p * d + 0.5;
  p = p * d + 1.0;
  p = p * d + 1.0;
  return n > 0.0 ? n * (table * p) : 0.0;
}

// Weights w[b] = n_b * exp(alpha * (mean_b - 1)) and w[b] * mean_b of a channel's bins (bin 0
// without the `zeros` exact zeros: they are exact at every clip). An empty bin weighs 0. Bin 0
// apart, so that the loop over the others has no index arithmetic to convert (int64 -> double
// needs AVX-512DQ) and vectorizes.
MMDAQ_CPU_CLONES void bin_weights_polynomial(const double* __restrict__ cnt,
                                             const double* __restrict__ sum, int64_t bins,
                                             double zeros, const double* __restrict__ table,
                                             const double* __restrict__ lower, double alpha,
                                             double* __restrict__ w, double* __restrict__ wx) {
  const double n0 = std::max(cnt[0] - zeros, 0.0);
  const double mean0 = sum[0] / std::max(n0, 1.0);
  w[0] = bin_weight(n0, mean0, 0.0, table[0], alpha);
  wx[0] = w[0] * mean0;
  for (int64_t b = 1; b < bins; ++b) {
    const double n = cnt[b];
    const double mean = sum[b] / (n > 1.0 ? n : 1.0);
    const double weight = bin_weight(n, mean, lower[b], table[b], alpha);
    w[b] = weight;
    wx[b] = weight * mean;
  }
}

void bin_weights_exp(const double* cnt, const double* sum, int64_t bins, double zeros,
                     double alpha, double* w, double* wx) {
  for (int64_t b = 0; b < bins; ++b) {
    const double n = b == 0 ? std::max(cnt[0] - zeros, 0.0) : cnt[b];
    const double mean = sum[b] / std::max(n, 1.0);
    // An empty bin weighs 0 (n * exp(..) with n = 0): most bins of a small channel are empty.
    w[b] = n > 0.0 ? n * std::exp(alpha * (mean - 1.0)) : 0.0;
    wx[b] = w[b] * mean;
  }
}

// Arg-min over the candidate clips u = (j + 1) / B of the model objective (ties: larger u).
double objective_ratio(const double* cnt, const double* sum, int64_t bins, const BinExp& e,
                       double zeros, std::vector<double>& w, std::vector<double>& wx) {
  if (e.polynomial) {
    bin_weights_polynomial(cnt, sum, bins, zeros, e.table.data(), e.lower.data(), e.alpha,
                           w.data(), wx.data());
  } else {
    bin_weights_exp(cnt, sum, bins, zeros, e.alpha, w.data(), wx.data());
  }
  double total = 0.0;
  for (int64_t b = 0; b < bins; ++b) total += w[b];
  double above_w = 0.0, above_wx = 0.0;  // sums over the bins after candidate j
  double best = std::numeric_limits<double>::infinity();
  int64_t best_j = bins - 1;
  for (int64_t j = bins - 1; j >= 0; --j) {
    const double u = e.u[j];
    double rounded = total - above_w;
    if (j == bins - 1) rounded -= 1.0;  // the abs-max value is exact at u = 1
    rounded = std::max(rounded, 0.0);
    const double energy = above_wx - u * above_w + e.u_rounding[j] * rounded;
    if (energy < best) {
      best = energy;
      best_j = j;
    }
    above_w += w[j];
    above_wx += wx[j];
  }
  return static_cast<double>(best_j + 1) / bins;
}

// Values whose x and bin are computed in one go before the histogram adds (fits in L1).
constexpr int64_t kChunk = 2048;

Stats grad_channel_stats_cpu(const at::Tensor& g, int64_t dim, int64_t num_bins, double alpha,
                             int64_t max_code, bool return_hist) {
  const auto layout =
      mmdaq::check_channel_stats_args(g, dim, num_bins, alpha, max_code, /*max_bins=*/-1);
  const int64_t outer = layout.outer, channels = layout.channels, inner = layout.inner;
  const int64_t count = outer * inner;
  const int64_t kept_bins = return_hist ? num_bins : 0;
  auto outputs = mmdaq::make_channel_stats_outputs(g, channels, kept_bins);
  auto& [abs_max, sigma, frac, ratio, hist_count, hist_sum, zero_count] = outputs;
  if (channels == 0 || count == 0) {
    return outputs;
  }
  const auto gc = g.contiguous();
  const float* gp = gc.data_ptr<float>();
  float* max_p = abs_max.data_ptr<float>();
  float* sigma_p = sigma.data_ptr<float>();
  float* frac_p = frac.data_ptr<float>();
  float* ratio_p = ratio.data_ptr<float>();
  double* cnt_out = hist_count.data_ptr<double>();
  double* sum_out = hist_sum.data_ptr<double>();
  int64_t* zeros_p = zero_count.data_ptr<int64_t>();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float bins = static_cast<float>(num_bins);

  const BinExp bin_exp = make_bin_exp(num_bins, alpha, max_code);
  at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
    // Per-task buffers: one channel's histogram and the objective's bin weights.
    std::vector<double> cnt(num_bins), sum(num_bins), w(num_bins), wx(num_bins);
    std::vector<int64_t> counts(2 * num_bins);
    std::vector<double> sum2(num_bins);
    std::vector<float> xs(kChunk);
    std::vector<int32_t> idx(kChunk);
    for (int64_t c = begin; c < end; ++c) {
      auto for_each = [&](auto&& fn) {
        for (int64_t o = 0; o < outer; ++o) {
          const float* row = gp + (o * channels + c) * inner;
          for (int64_t i = 0; i < inner; ++i) fn(row[i]);
        }
      };
      // Pass 1: abs-max, the raw second moment, the exact zeros, finiteness.
      RowMoments moments;
      for (int64_t o = 0; o < outer; ++o) {
        add_row_moments(gp + (o * channels + c) * inner, inner, moments);
      }
      float m;
      std::memcpy(&m, &moments.abs_max_bits, sizeof(m));
      const double sq = moments.sq;
      const int64_t zeros = moments.zeros;
      zeros_p[c] = zeros;
      if (moments.non_finite > 0) {  // NaN/Inf: visible downstream, no statistics (matches the reference)
        bool has_nan = false;
        for_each([&](float v) { has_nan = has_nan || std::isnan(v); });
        max_p[c] = has_nan ? nan : std::numeric_limits<float>::infinity();
        sigma_p[c] = nan;
        frac_p[c] = nan;
        ratio_p[c] = nan;
        continue;
      }
      max_p[c] = m;
      if (m == 0.0f) {  // all-zero channel: sigma 0, nothing above it, everything in bin 0
        if (kept_bins > 0) cnt_out[c * num_bins] = static_cast<double>(count);
        continue;
      }
      // sigma of x = |g| / max, in [0, 1] (the reference's form).
      const double md = m;
      const float sigma_rel = static_cast<float>(std::sqrt(sq / count) / md);
      // Pass 2: P(x > sigma) and the histogram of x (x as the reference computes it, so the
      // same bins).
      int64_t above = 0;
      const float inv = 1.0f / m;  // x = |g| * (1 / max), exactly as channel_histograms does
      const bool divide = std::isinf(inv);  // see relative()
      if (num_bins > 0) {
        // Two interleaved histograms: consecutive values often fall into the same bin, and
        // one array would chain every increment on the previous one.
        std::fill(counts.begin(), counts.end(), 0);
        std::fill(sum.begin(), sum.end(), 0.0);
        std::fill(sum2.begin(), sum2.end(), 0.0);
        int64_t* c0 = counts.data();
        int64_t* c1 = counts.data() + num_bins;
        const int32_t last_bin = static_cast<int32_t>(num_bins - 1);
        for (int64_t o = 0; o < outer; ++o) {
          const float* row = gp + (o * channels + c) * inner;
          for (int64_t r0 = 0; r0 < inner; r0 += kChunk) {  // x and bins of a chunk, then add
            const int64_t len = std::min(kChunk, inner - r0);
            above += divide ? row_bins<true>(row + r0, len, inv, m, bins, last_bin, sigma_rel,
                                             xs.data(), idx.data())
                            : row_bins<false>(row + r0, len, inv, m, bins, last_bin, sigma_rel,
                                              xs.data(), idx.data());
            int64_t i = 0;
            for (; i + 1 < len; i += 2) {
              c0[idx[i]] += 1;
              sum[idx[i]] += static_cast<double>(xs[i]);
              c1[idx[i + 1]] += 1;
              sum2[idx[i + 1]] += static_cast<double>(xs[i + 1]);
            }
            for (; i < len; ++i) {
              c0[idx[i]] += 1;
              sum[idx[i]] += static_cast<double>(xs[i]);
            }
          }
        }
        for (int64_t b = 0; b < num_bins; ++b) {
          cnt[b] = static_cast<double>(c0[b] + c1[b]);
          sum[b] += sum2[b];
        }
      } else {
        for (int64_t o = 0; o < outer; ++o) {
          const float* row = gp + (o * channels + c) * inner;
          above += divide ? row_above<true>(row, inner, inv, m, sigma_rel)
                          : row_above<false>(row, inner, inv, m, sigma_rel);
        }
      }
      sigma_p[c] = sigma_rel * m;
      frac_p[c] = static_cast<float>(static_cast<double>(above) / count);
      if (num_bins > 0) {
        ratio_p[c] = static_cast<float>(
            objective_ratio(cnt.data(), sum.data(), num_bins, bin_exp,
                            static_cast<double>(zeros), w, wx));
      }
      if (kept_bins > 0) {
        std::copy(cnt.begin(), cnt.end(), cnt_out + c * num_bins);
        std::copy(sum.begin(), sum.end(), sum_out + c * num_bins);
      }
    }
  });
  return outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) { m.impl("grad_channel_stats", &grad_channel_stats_cpu); }
