// Module init of mmdaq._ext: importing it runs the TORCH_LIBRARY registrations of csrc/.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <mutex>
#include <set>
#include <thread>

namespace {

// Threads that at::parallel_for really ran `tasks` one-element tasks on, as compiled into this
// extension: 1 whatever torch.get_num_threads() says if the build lost OpenMP (setup.py).
int64_t parallel_threads_used(int64_t tasks) {
  std::set<std::thread::id> ids;
  std::mutex lock;
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> guard(lock);
    ids.insert(std::this_thread::get_id());
  });
  return static_cast<int64_t>(ids.size());
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmdaq INT8 kernels; the ops are exposed under torch.ops.mmdaq";
#ifdef MMDAQ_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("parallel_threads_used", &parallel_threads_used,
        "Threads at::parallel_for ran `tasks` tasks on, in this extension's build");
}
