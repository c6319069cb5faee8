// Schema of the GEMM epilogue op; kernels are registered per device.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mmdaq, m) {
  // out[n, c, l] = acc[n * L + l, c] * scale (+ bias[c]): the int32 result of a channels-last
  // GEMM ([N*L, C]) scaled to float32 and laid out as NC* (out_shape = [N, C, *S], L = prod S)
  // in one pass. scale has 1 or C elements. See mmdaq/kernels/epilogue.py.
  m.def("int32_to_channels_first(Tensor acc, Tensor scale, Tensor? bias, int[] out_shape) -> "
        "Tensor");
}
