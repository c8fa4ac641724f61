// What the C++ shims built into one shared object by jaxcnn/cpu/build.py share (defined in
// onednn_conv.cc): the oneDNN engine, one lock for every OpenMP team they start, the
// scratch buffer they reuse under it, reusable buffers, a scoped OpenMP team size, and bfloat16 loads and stores.

#ifndef JAXCNN_CSRC_SHIM_H_
#define JAXCNN_CSRC_SHIM_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
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

// A page-aligned buffer reused across calls (they are serialised by OpenMPLock()), grown on demand.
struct Arena {
  std::unique_ptr<char, decltype(&std::free)> data{nullptr, &std::free};
  size_t size = 0;
  void* Get(size_t bytes) {
    if (bytes > size) {
      size = (bytes + 4095) / 4096 * 4096;
      data.reset(static_cast<char*>(std::aligned_alloc(4096, size)));
    }
    return data.get();
  }
  float* Floats(size_t n) { return static_cast<float*>(Get(n * sizeof(float))); }
};

// The calling thread's OpenMP team size for one call, put back afterwards: XLA may run the
// call on the Python thread, and the process's other OpenMP users (PyTorch links the same
// libgomp) must not inherit a team of one.
struct OpenMPTeam {
  int saved = omp_get_max_threads();
  explicit OpenMPTeam(int n) { omp_set_num_threads(n); }
  ~OpenMPTeam() { omp_set_num_threads(saved); }
};

// float32 and bfloat16 (its bits in a uint16_t) elements, loaded and stored as float.
inline float Load(const float* p) { return *p; }
inline float Load(const uint16_t* p) {
  uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline void Store(float* p, float v) { *p = v; }
inline void Store(uint16_t* p, float v) {  // round to nearest even, NaN kept quiet
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if (std::isnan(v)) {
    *p = static_cast<uint16_t>((bits >> 16) | 0x40);
    return;
  }
  bits += 0x7FFF + ((bits >> 16) & 1);
  *p = static_cast<uint16_t>(bits >> 16);
}

}  // namespace jaxcnn

#endif  // JAXCNN_CSRC_SHIM_H_
