// CPU kernel of mmdaq::grad_channel_stats: every statistic DAQ's clipping needs from G_Y, read
// straight from the [outer, C, inner] layout (no channel-major copy), one channel per task.
// A channel's values are read three times (abs-max; second moment; count and histogram); for
// the usual sizes (N*H*W floats, tens to hundreds of KiB) the later passes hit the cache.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

namespace {

using Stats = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Stats grad_channel_stats_cpu(const at::Tensor& g, int64_t dim, int64_t num_bins) {
  TORCH_CHECK(g.scalar_type() == at::kFloat, "grad_channel_stats: g must be float32, but got ",
              g.scalar_type());
  TORCH_CHECK(g.dim() >= 1, "grad_channel_stats: g must have at least one dimension");
  TORCH_CHECK(dim >= -g.dim() && dim < g.dim(), "grad_channel_stats: dim must be in [",
              -g.dim(), ", ", g.dim(), "), but got ", dim);
  TORCH_CHECK(num_bins >= 0, "grad_channel_stats: num_bins must be >= 0, but got ", num_bins);
  dim = dim < 0 ? dim + g.dim() : dim;
  const int64_t channels = g.size(dim);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= g.size(d);
  for (int64_t d = dim + 1; d < g.dim(); ++d) inner *= g.size(d);
  const int64_t count = outer * inner;

  const auto fopt = g.options();
  auto abs_max = at::zeros({channels}, fopt);
  auto sigma = at::zeros({channels}, fopt);
  auto frac = at::zeros({channels}, fopt);
  auto hist_count = at::zeros({channels, num_bins}, fopt.dtype(at::kDouble));
  auto hist_sum = at::zeros({channels, num_bins}, fopt.dtype(at::kDouble));
  if (channels == 0 || count == 0) {
    return {abs_max, sigma, frac, hist_count, hist_sum};
  }
  const auto gc = g.contiguous();
  const float* gp = gc.data_ptr<float>();
  float* max_p = abs_max.data_ptr<float>();
  float* sigma_p = sigma.data_ptr<float>();
  float* frac_p = frac.data_ptr<float>();
  double* cnt_p = hist_count.data_ptr<double>();
  double* sum_p = hist_sum.data_ptr<double>();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float bins = static_cast<float>(num_bins);

  at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      auto for_each = [&](auto&& fn) {
        for (int64_t o = 0; o < outer; ++o) {
          const float* row = gp + (o * channels + c) * inner;
          for (int64_t i = 0; i < inner; ++i) fn(row[i]);
        }
      };
      float m = 0.0f;
      bool finite = true;
      for_each([&](float v) {
        const float a = std::fabs(v);
        finite = finite && std::isfinite(a);
        m = a > m ? a : m;
      });
      if (!finite) {  // NaN/Inf: visible downstream, no statistics (matches the reference)
        bool has_nan = false;
        for_each([&](float v) { has_nan = has_nan || std::isnan(v); });
        max_p[c] = has_nan ? nan : std::numeric_limits<float>::infinity();
        sigma_p[c] = nan;
        frac_p[c] = nan;
        continue;
      }
      max_p[c] = m;
      if (m == 0.0f) {  // all-zero channel: sigma 0, nothing above it, everything in bin 0
        if (num_bins > 0) cnt_p[c * num_bins] = static_cast<double>(count);
        continue;
      }
      // Moments of x = |g| / max in [0, 1]: g**2 cannot overflow for huge finite gradients.
      double sq = 0.0;
      for_each([&](float v) {
        const double x = std::fabs(v) / m;
        sq += x * x;
      });
      const float sigma_rel = static_cast<float>(std::sqrt(sq / count));
      int64_t above = 0;
      double* cnt = cnt_p + c * num_bins;
      double* sum = sum_p + c * num_bins;
      for_each([&](float v) {
        const float x = std::fabs(v) / m;
        above += x > sigma_rel;
        if (num_bins > 0) {
          const int64_t b = std::min<int64_t>(static_cast<int64_t>(x * bins), num_bins - 1);
          cnt[b] += 1.0;
          sum[b] += static_cast<double>(x);
        }
      });
      sigma_p[c] = sigma_rel * m;
      frac_p[c] = static_cast<float>(static_cast<double>(above) / count);
    }
  });
  return {abs_max, sigma, frac, hist_count, hist_sum};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) { m.impl("grad_channel_stats", &grad_channel_stats_cpu); }
