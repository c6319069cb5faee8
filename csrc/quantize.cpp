// Schemas of the quantization ops; kernels are registered per device in cpu/ and cuda/.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mmdaq, m) {
  // Codes of x for the given step(s): per tensor if scale has one element, else per channel
  // along `dim` (scale.numel() == x.size(dim)). Returns int8 with x's shape.
  m.def("quantize_int8(Tensor x, Tensor scale, int dim) -> Tensor");
  // Per-tensor INT8 codes of x with its abs-max as the clip, in one op: the step
  // clip_to_scale(abs-max, abs-max, 127) (NaN where x holds NaN or Inf, 0 for all zeros or an
  // empty x) and the codes quantize_int8 gives for it. Returns (codes, scale []).
  m.def("quantize_per_tensor_int8(Tensor x) -> (Tensor, Tensor)");
  // The same with stochastic rounding: floor(v) + (u < v - floor(v)), v = x / scale clamped to
  // [-127, 127], u of element i from Philox-4x32-10 block offset + i / 4 under `seed`
  // (reproducible, the same on every device; philox_uniform gives the u's).
  m.def("quantize_int8_stochastic(Tensor x, Tensor scale, int dim, int seed, int offset) -> "
        "Tensor");
  // Both copies of a gradient the backward GEMMs take, from one read of x: the codes for the
  // per-channel steps `scale` along `dim` and those for the per-tensor step `tensor_scale`
  // (each the codes quantize_int8 gives for that step).
  m.def("quantize_int8_pair(Tensor x, Tensor scale, int dim, Tensor tensor_scale) -> "
        "(Tensor, Tensor)");
  // Steps of clips (same shape as clip and data_max: [] or [C]): clip / qmax, NaN where the
  // data or the clip are not finite or the clip is negative. One op for what is otherwise a
  // dozen elementwise ops on tiny tensors per quantization.
  m.def("clip_to_scale(Tensor clip, Tensor data_max, int qmax) -> Tensor");
  // The uniform numbers quantize_int8_stochastic uses: float32 with like's shape and device.
  m.def("philox_uniform(Tensor like, int seed, int offset) -> Tensor");
}
