// Module init of mmdaq._ext: importing it runs the TORCH_LIBRARY registrations of csrc/.
#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmdaq INT8 kernels; the ops are exposed under torch.ops.mmdaq";
#ifdef MMDAQ_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
