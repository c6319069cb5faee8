// Schemas of the quantization ops; kernels are registered per device in cpu/ and cuda/.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mmdaq, m) {
  // Codes of x for the given step(s): per tensor if scale has one element, else per channel
  // along `dim` (scale.numel() == x.size(dim)). Returns int8 with x's shape.
  m.def("quantize_int8(Tensor x, Tensor scale, int dim) -> Tensor");
}
