// What the C++ shims built into one shared object by jaxcnn/onednn.py share (defined in
// onednn_conv.cc): the oneDNN engine, one lock for every OpenMP team they start, the
// scratch buffer they reuse under it, and a scoped OpenMP team size.

#ifndef JAXCNN_CSRC_SHIM_H_
#define JAXCNN_CSRC_SHIM_H_

#include <cstddef>
#include <mutex>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"

namespace jaxcnn {

dnnl::engine& Engine();

// Serialises every OpenMP team the shims start: XLA runs independent calls concurrently,
// and two teams on the same cores oversubscribe them, which OpenMP's barriers pay for dearly.
std::mutex& OpenMPLock();

// Scratch space reused by every call made under OpenMPLock(): allocating it per call costs
// fresh pages, i.e. page faults, on every call.
void* Scratch(size_t bytes);

// The calling thread's OpenMP team size for one call, put back afterwards: XLA may run the
// call on the Python thread, and the process's other OpenMP users (PyTorch links the same
// libgomp) must not inherit a team of one.
struct OpenMPTeam {
  int saved = omp_get_max_threads();
  explicit OpenMPTeam(int n) { omp_set_num_threads(n); }
  ~OpenMPTeam() { omp_set_num_threads(saved); }
};

}  // namespace jaxcnn

#endif  // JAXCNN_CSRC_SHIM_H_
