// Schema of DAQ's G_Y pass as one op (the CPU twin of the Triton G_Y pass of
// mmdaq/ops/triton_grad_stats.py); the kernel is CPU-only.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mmdaq, m) {
  // DAQ's backward G_Y pass for the channels along `dim` of float32 g: the statistics and the
  // objective clip of grad_channel_stats (num_bins bins at most, DAQScheme's rule
  // min(num_bins, max(64, values per channel))); the distribution test (a channel with
  // P(|g| > sigma) > threshold keeps its abs-max as clip); the clip state updated in place as
  // DAQScheme updates it (prev_clip = clip and clip_ratio = clip / abs-max where finite, or
  // unconditionally without history; is_gaussian = the test); both INT8 copies (codes for the
  // per-channel steps clip / 127 and for the per-tensor step abs-max(g) / 127, nearest); and,
  // with need_bias, g summed over all but `dim`. Returns (q_w, s_w [C], q_x, s_x [], g_max [C],
  // frac_above_sigma [C], clip [C], grad_bias [C] or [0]).
  m.def("daq_grad_codes(Tensor g, int dim, int num_bins, float alpha, float threshold, "
        "Tensor(a!) prev_clip, Tensor(b!) clip_ratio, Tensor(c!) is_gaussian, bool has_history, "
        "bool need_bias) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
