// Schema of the int8 layout op (im2col, the oneDNN convolution path); the kernel is CPU-only.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mmdaq, m) {
  // int8 codes x [N, C, *S] (S: 1 to 3 dims) laid out channels last ([N, *S, C] in memory,
  // strides of torch.channels_last / channels_last_3d for 4-d / 5-d), in one pass. With
  // to_uint8, the codes + 128 as uint8: the activation oneDNN's u8 x s8 convolution takes,
  // with zero point 128. See mmdaq/ops/layout.py.
  m.def("int8_channels_last(Tensor x, bool to_uint8) -> Tensor");
}
