// Schema of the per-channel gradient statistics op; kernels are registered per device.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mmdaq, m) {
  // Per channel c along `dim` of float32 g: abs-max, RMS sigma, P(|g| > sigma) and, if
  // num_bins > 0, the histogram of x = |g| / abs-max over num_bins bins of [0, 1] and the clip
  // ratio minimising DAQ's magnitude-weighted error on it (weight exp(alpha (x - 1)), largest
  // code max_code). The histograms (counts and sums of x, float64 [C, num_bins]) are returned
  // only if return_hist, else they are [C, 0]. zero_count (int64 [C], always computed) is the
  // number of exact zeros: the objective leaves them out of its rounding term (exact at any
  // clip). See mmdaq/kernels/channel_stats.py.
  m.def("grad_channel_stats(Tensor g, int dim, int num_bins, float alpha, int max_code, "
        "bool return_hist) -> (Tensor abs_max, Tensor sigma, Tensor frac_above, "
        "Tensor clip_ratio, Tensor hist_count, Tensor hist_sum, Tensor zero_count)");
}
