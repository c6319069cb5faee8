// CPU kernel of mmdaq::daq_grad_codes: DAQ's G_Y pass in one op (statistics, clip, clip state,
// both INT8 copies, bias gradient), so a layer's backward runs it without a dozen tiny
// elementwise ops on [C] vectors from Python. The per-channel arithmetic is that of
// DAQScheme.grad_weight_clip_and_max / _keep_clip and quantize_per_channel_and_tensor (the same
// float32 operations in the same order: bit-identical results, tested).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "../common/check.h"
#include "../common/quant_utils.h"

namespace {

using Stats =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                           at::Tensor, at::Tensor>;

constexpr int kQmax = 127;

void check_state(const at::Tensor& t, at::ScalarType dtype, int64_t channels, const char* name) {
  MMDAQ_CHECK(t.scalar_type() == dtype && t.dim() == 1 && t.size(0) == channels &&
                  t.is_contiguous() && t.device().is_cpu(),
              "daq_grad_codes: ", name, " must be a contiguous CPU ", c10::toString(dtype),
              " tensor of shape [", channels, "], but got ", t.scalar_type(), " of shape ",
              t.sizes());
}

Outputs daq_grad_codes_cpu(const at::Tensor& g, int64_t dim, int64_t num_bins, double alpha,
                           double threshold, at::Tensor& prev_clip, at::Tensor& clip_ratio,
                           at::Tensor& is_gaussian, bool has_history, bool need_bias) {
  MMDAQ_CHECK(g.scalar_type() == at::kFloat && g.dim() >= 1,
              "daq_grad_codes: g must be a float32 tensor with a channel dim, but got ",
              g.scalar_type(), " of shape ", g.sizes());
  MMDAQ_CHECK(dim >= -g.dim() && dim < g.dim(), "daq_grad_codes: dim must be in [", -g.dim(), ", ",
              g.dim(), "), but got ", dim);
  dim = dim < 0 ? dim + g.dim() : dim;
  const int64_t channels = g.size(dim);
  MMDAQ_CHECK(channels > 0 && g.numel() > 0, "daq_grad_codes: g must not be empty, but got shape ",
              g.sizes());
  MMDAQ_CHECK(num_bins >= 1, "daq_grad_codes: num_bins must be >= 1, but got ", num_bins);
  check_state(prev_clip, at::kFloat, channels, "prev_clip");
  check_state(clip_ratio, at::kFloat, channels, "clip_ratio");
  check_state(is_gaussian, at::kBool, channels, "is_gaussian");
  const int64_t values = g.numel() / channels;
  const int64_t bins = std::min<int64_t>(num_bins, std::max<int64_t>(64, values));

  static auto stats_op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mmdaq::grad_channel_stats", "")
          .typed<Stats(const at::Tensor&, int64_t, int64_t, double, int64_t, bool)>();
  static auto pair_op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mmdaq::quantize_int8_pair", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t,
                                                    const at::Tensor&)>();
  const auto stats = stats_op.call(g, dim, bins, alpha, kQmax, false);
  const at::Tensor& g_max = std::get<0>(stats);
  const at::Tensor& frac = std::get<2>(stats);
  const at::Tensor& ratio = std::get<3>(stats);

  auto clip = at::empty({channels}, g_max.options());
  auto s_w = at::empty({channels}, g_max.options());
  auto s_x = at::empty({}, g_max.options());
  const float* mp = g_max.data_ptr<float>();
  const float* fp = frac.data_ptr<float>();
  const float* rp = ratio.data_ptr<float>();
  float* cp = clip.data_ptr<float>();
  float* sp = s_w.data_ptr<float>();
  float* prev = prev_clip.data_ptr<float>();
  float* kept_ratio = clip_ratio.data_ptr<float>();
  bool* gauss = is_gaussian.data_ptr<bool>();
  const float lam = static_cast<float>(threshold);  // compared in float32, as torch does
  const float nan = std::numeric_limits<float>::quiet_NaN();
  float tensor_max = mp[0];
  bool tensor_nan = false;
  for (int64_t c = 0; c < channels; ++c) {
    const float m = mp[c];
    const float objective = std::isfinite(m) ? rp[c] * m : nan;
    const bool bell = fp[c] > lam;
    const float clip_c = bell ? m : objective;
    // The clip's ratio to the abs-max (1 for an all-zero channel) and the history a non-finite
    // channel keeps.
    const float r = m > 0.0f ? clip_c / std::max(m, 1e-30f) : 1.0f;
    kept_ratio[c] = !has_history || std::isfinite(r) ? r : kept_ratio[c];
    prev[c] = !has_history || std::isfinite(clip_c) ? clip_c : prev[c];
    gauss[c] = bell;
    cp[c] = clip_c;
    sp[c] = mmdaq::clip_to_step(clip_c, m, kQmax);
    if (std::isnan(m)) {
      tensor_nan = true;
    } else if (m > tensor_max) {
      tensor_max = m;
    }
  }
  if (tensor_nan) tensor_max = nan;
  s_x.fill_(mmdaq::clip_to_step(tensor_max, tensor_max, kQmax));
  auto codes = pair_op.call(g, s_w, dim, s_x);
  at::Tensor grad_bias;
  if (need_bias) {
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < g.dim(); ++d) {
      if (d != dim) dims.push_back(d);
    }
    grad_bias = dims.empty() ? g.clone() : g.sum(dims);
  } else {
    grad_bias = at::empty({0}, g_max.options());
  }
  return {std::get<0>(codes), s_w, std::get<1>(codes), s_x, g_max, frac, clip, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) { m.impl("daq_grad_codes", &daq_grad_codes_cpu); }
