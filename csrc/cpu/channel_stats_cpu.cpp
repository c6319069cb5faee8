// CPU kernel of mmdaq::grad_channel_stats: every statistic DAQ's clipping needs from G_Y, read
// straight from the [outer, C, inner] layout (no channel-major copy), one channel per task.
// A channel's values are read twice (abs-max and second moment; count and histogram); for the
// usual sizes (N*H*W floats, tens to hundreds of KiB) the second pass hits the cache. The
// clip search then runs on the channel's histogram in O(num_bins), in registers and a local
// buffer, the same arithmetic as objective_curve_from_histograms in
// mmdaq/quantization/histogram_clip.py. Pass 1 also counts the exact zeros: they quantize
// exactly at any clip, so the objective takes them out of bin 0 (no rounding error charged).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "../channel_stats_args.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace {

using Stats = mmdaq::ChannelStats;

// Arg-min over the candidate clips u = (j + 1) / B of the model objective (ties: larger u).
// `zeros` exact zeros are taken out of bin 0: they are exact at every clip.
double objective_ratio(const double* cnt, const double* sum, int64_t bins, double alpha,
                       int64_t max_code, double zeros, std::vector<double>& w,
                       std::vector<double>& wx) {
  for (int64_t b = 0; b < bins; ++b) {
    const double n = b == 0 ? std::max(cnt[0] - zeros, 0.0) : cnt[b];
    const double mean = sum[b] / std::max(n, 1.0);
    w[b] = n * std::exp(alpha * (mean - 1.0));
    wx[b] = w[b] * mean;
  }
  double total = 0.0;
  for (int64_t b = 0; b < bins; ++b) total += w[b];
  double above_w = 0.0, above_wx = 0.0;  // sums over the bins after candidate j
  double best = std::numeric_limits<double>::infinity();
  int64_t best_j = bins - 1;
  for (int64_t j = bins - 1; j >= 0; --j) {
    const double u = static_cast<double>(j + 1) / bins;
    double rounded = total - above_w;
    if (j == bins - 1) rounded -= 1.0;  // the abs-max value is exact at u = 1
    rounded = std::max(rounded, 0.0);
    const double energy = above_wx - u * above_w + u / (4.0 * max_code) * rounded;
    if (energy < best) {
      best = energy;
      best_j = j;
    }
    above_w += w[j];
    above_wx += wx[j];
  }
  return static_cast<double>(best_j + 1) / bins;
}

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

  at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
    // Per-task buffers: one channel's histogram and the objective's bin weights.
    std::vector<double> cnt(num_bins), sum(num_bins), w(num_bins), wx(num_bins);
    std::vector<int64_t> counts(2 * num_bins);
    std::vector<double> sum2(num_bins);
    for (int64_t c = begin; c < end; ++c) {
      auto for_each = [&](auto&& fn) {
        for (int64_t o = 0; o < outer; ++o) {
          const float* row = gp + (o * channels + c) * inner;
          for (int64_t i = 0; i < inner; ++i) fn(row[i]);
        }
      };
      // Pass 1: abs-max, the raw second moment (in double: no overflow for any float) and
      // the exact zeros (+0 and -0; NaN is not one).
      float m = 0.0f;
      bool finite = true;
      double sq = 0.0;
      int64_t zeros = 0;
      for_each([&](float v) {
        const float a = std::fabs(v);
        finite = finite && std::isfinite(a);
        m = a > m ? a : m;
        sq += static_cast<double>(v) * v;
        zeros += v == 0.0f;
      });
      zeros_p[c] = zeros;
      if (!finite) {  // NaN/Inf: visible downstream, no statistics (matches the reference)
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
      if (num_bins > 0) {
        // Two interleaved histograms: consecutive values often fall into the same bin, and
        // one array would chain every increment on the previous one.
        std::fill(counts.begin(), counts.end(), 0);
        std::fill(sum.begin(), sum.end(), 0.0);
        std::fill(sum2.begin(), sum2.end(), 0.0);
        int64_t* c0 = counts.data();
        int64_t* c1 = counts.data() + num_bins;
        for (int64_t o = 0; o < outer; ++o) {
          const float* row = gp + (o * channels + c) * inner;
          int64_t i = 0;
          for (; i + 1 < inner; i += 2) {
            const float x0 = std::fabs(row[i]) * inv, x1 = std::fabs(row[i + 1]) * inv;
            above += (x0 > sigma_rel) + (x1 > sigma_rel);
            const int64_t b0 = std::min<int64_t>(static_cast<int64_t>(x0 * bins), num_bins - 1);
            const int64_t b1 = std::min<int64_t>(static_cast<int64_t>(x1 * bins), num_bins - 1);
            c0[b0] += 1;
            sum[b0] += static_cast<double>(x0);
            c1[b1] += 1;
            sum2[b1] += static_cast<double>(x1);
          }
          for (; i < inner; ++i) {
            const float x = std::fabs(row[i]) * inv;
            above += x > sigma_rel;
            const int64_t b = std::min<int64_t>(static_cast<int64_t>(x * bins), num_bins - 1);
            c0[b] += 1;
            sum[b] += static_cast<double>(x);
          }
        }
        for (int64_t b = 0; b < num_bins; ++b) {
          cnt[b] = static_cast<double>(c0[b] + c1[b]);
          sum[b] += sum2[b];
        }
      } else {
        for_each([&](float v) { above += std::fabs(v) * inv > sigma_rel; });
      }
      sigma_p[c] = sigma_rel * m;
      frac_p[c] = static_cast<float>(static_cast<double>(above) / count);
      if (num_bins > 0) {
        ratio_p[c] = static_cast<float>(
            objective_ratio(cnt.data(), sum.data(), num_bins, alpha, max_code,
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
