// Argument checks, layout and outputs of grad_channel_stats, shared by the CPU and CUDA kernels.
#pragma once

#include <torch/types.h>

#include <cmath>
#include <tuple>

#include "common/check.h"

namespace mmdaq {

using ChannelStats =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

struct ChannelStatsLayout {
  int64_t outer, channels, inner;  // g viewed as [outer, channels, inner]
};

// max_bins < 0: no upper limit on num_bins (CPU); else the device's limit (CUDA).
inline ChannelStatsLayout check_channel_stats_args(const at::Tensor& g, int64_t dim,
                                                   int64_t num_bins, double alpha, int64_t max_code,
                                                   int64_t max_bins) {
  MMDAQ_CHECK(g.scalar_type() == at::kFloat, "grad_channel_stats: g must be float32, but got ",
              g.scalar_type());
  MMDAQ_CHECK(g.dim() >= 1, "grad_channel_stats: g must have at least one dimension");
  MMDAQ_CHECK(dim >= -g.dim() && dim < g.dim(), "grad_channel_stats: dim must be in [", -g.dim(),
              ", ", g.dim(), "), but got ", dim);
  if (max_bins < 0) {
    MMDAQ_CHECK(num_bins >= 0, "grad_channel_stats: num_bins must be >= 0, but got ", num_bins);
  } else {
    MMDAQ_CHECK(num_bins >= 0 && num_bins <= max_bins,
                "grad_channel_stats: num_bins must be in [0, ", max_bins, "] on ", g.device().str(),
                ", but got ", num_bins);
  }
  MMDAQ_CHECK(alpha >= 0 && std::isfinite(alpha),
              "grad_channel_stats: alpha must be a finite number >= 0, but got ", alpha);
  MMDAQ_CHECK(max_code >= 1, "grad_channel_stats: max_code must be >= 1, but got ", max_code);
  dim = dim < 0 ? dim + g.dim() : dim;
  ChannelStatsLayout layout{1, g.size(dim), 1};
  for (int64_t d = 0; d < dim; ++d) layout.outer *= g.size(d);
  for (int64_t d = dim + 1; d < g.dim(); ++d) layout.inner *= g.size(d);
  return layout;
}

// The outputs before any channel is processed: statistics 0, clip ratio 1, empty histograms
// ([C, 0]) unless kept_bins > 0, zero counts 0.
inline ChannelStats make_channel_stats_outputs(const at::Tensor& g, int64_t channels,
                                               int64_t kept_bins) {
  const auto fopt = g.options();
  return {at::zeros({channels}, fopt),
          at::zeros({channels}, fopt),
          at::zeros({channels}, fopt),
          at::ones({channels}, fopt),
          at::zeros({channels, kept_bins}, fopt.dtype(at::kDouble)),
          at::zeros({channels, kept_bins}, fopt.dtype(at::kDouble)),
          at::zeros({channels}, fopt.dtype(at::kLong))};
}

}  // namespace mmdaq
