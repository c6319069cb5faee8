// Schemas of the layout ops (im2col, the oneDNN convolution path, the weight gradient of
// the GEMM path); the kernels are CPU-only.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mmdaq, m) {
  // int8 codes x [N, C, *S] (S: 1 to 3 dims) laid out channels last ([N, *S, C] in memory,
  // strides of torch.channels_last / channels_last_3d for 4-d / 5-d), in one pass. With
  // to_uint8, the codes + 128 as uint8: the activation oneDNN's u8 x s8 convolution takes,
  // with zero point 128. See mmdaq/kernels/layout.py.
  m.def("int8_channels_last(Tensor x, bool to_uint8) -> Tensor");
  // The weight of the input gradient as a stride-1 convolution of G_Y (one group): w [C_out,
  // C_in, *k] -> [C_in, C_out, *k], taps flipped, stored [*k, C_out, C_in]. See
  // mmdaq/kernels/layout.py.
  m.def("int8_transposed_weight(Tensor w) -> Tensor");
  // The columns of a convolution from int8 codes x [N, C, *S] (S: 1 to 3 dims; channels last
  // in memory or laid out so first): cols [N * L, C * K], the columns of output position l in
  // (group, k_1 .. k_d, channel of the group) order, zeros where a tap falls in the padding.
  // See mmdaq/ops/im2col.py.
  m.def("int8_im2col(Tensor x, int[] kernel, int[] stride, int[] padding, int[] dilation, "
        "int groups) -> Tensor");
  // The weight gradient from the integer sums of its GEMM: acc [C_out, K * C_in] (int32,
  // columns in (k, c) order) times scale[C_out] per row, as float32 in the weight's layout
  // weight_shape = [C_out, C_in, *k]: out[o, c, k] = float(acc[o, k * C_in + c]) * scale[o].
  m.def("int32_to_weight(Tensor acc, Tensor scale, int[] weight_shape) -> Tensor");
}
