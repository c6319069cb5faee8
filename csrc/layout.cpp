// Schema of the layout op of the oneDNN convolution path; the kernel is CPU-only.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mmdaq, m) {
  // uint8 codes + 128 of int8 codes x [N, C, *S] (S: 1 to 3 dims), laid out channels last
  // ([N, *S, C] in memory, strides of torch.channels_last / channels_last_3d for 4-d / 5-d):
  // the activation oneDNN's u8 x s8 convolution takes, with zero point 128. One pass.
  // See mmdaq/ops/onednn_conv.py.
  m.def("int8_to_uint8_channels_last(Tensor x) -> Tensor");
}
