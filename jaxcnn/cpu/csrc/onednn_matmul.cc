// XLA FFI handler running a 2-D matrix product through oneDNN on the CPU:
// C (M x N) = op(A) @ op(B), op() a transpose or not, float32 or bfloat16 (AMX where the
// CPU has it, float32 accumulation). One handler serves a dense layer's forward
// (x @ W), input gradient (g @ W^T) and weight gradient (x^T @ g): the transposes are
// strides of oneDNN's memory descriptors, nothing is copied.
//
// XLA:CPU runs a dense layer's backward well below its matmul peak (its YNN dot fusions), and
// rewrites every bfloat16 dot into a float32 one with conversions around it
// (python -m benchmarks.cpu.dense_layers). Built with onednn_conv.cc into one shared object by
// jaxcnn/cpu/build.py.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "shim.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

constexpr double kSmallFlops = 8e6;   // below this, one thread: an OpenMP team costs more than it saves

struct Entry {
  dnnl::matmul prim;
  memory::desc a, b, c, scratch;
};

std::map<std::string, std::unique_ptr<Entry>>& Cache() {
  static std::map<std::string, std::unique_ptr<Entry>> cache;
  return cache;
}

ffi::Error MatMul(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c, bool transpose_a,
                  bool transpose_b) {
  if (a.element_type() != b.element_type() || a.element_type() != c->element_type())
    return ffi::Error::InvalidArgument("onednn matmul: operands must share one dtype");
  memory::data_type dt;
  if (a.element_type() == ffi::DataType::F32) {
    dt = memory::data_type::f32;
  } else if (a.element_type() == ffi::DataType::BF16) {
    dt = memory::data_type::bf16;
  } else {
    return ffi::Error::InvalidArgument("onednn matmul: only float32 and bfloat16 are supported");
  }
  auto da = a.dimensions(), db = b.dimensions(), dc = c->dimensions();
  if (da.size() != 2 || db.size() != 2 || dc.size() != 2)
    return ffi::Error::InvalidArgument("onednn matmul: expects 2-D operands");
  const int64_t m = transpose_a ? da[1] : da[0], k = transpose_a ? da[0] : da[1];
  const int64_t kb = transpose_b ? db[1] : db[0], n = transpose_b ? db[0] : db[1];
  if (k != kb || dc[0] != m || dc[1] != n) return ffi::Error::InvalidArgument("onednn matmul: inconsistent shapes");
  static const int team = omp_get_max_threads();
  const int threads = 2.0 * m * n * k < kSmallFlops ? 1 : team;
  try {
    std::lock_guard<std::mutex> guard(jaxcnn::OpenMPLock());
    jaxcnn::OpenMPTeam scoped_team(threads);
    std::ostringstream key;
    key << static_cast<int>(dt) << ':' << m << ',' << k << ',' << n << ',' << transpose_a << transpose_b << ','
        << threads;
    auto& cache = Cache();
    auto it = cache.find(key.str());
    auto& eng = jaxcnn::Engine();
    if (it == cache.end()) {
      auto e = std::make_unique<Entry>();
      e->a = memory::desc({m, k}, dt, transpose_a ? memory::dims{1, m} : memory::dims{k, 1});
      e->b = memory::desc({k, n}, dt, transpose_b ? memory::dims{1, k} : memory::dims{n, 1});
      e->c = memory::desc({m, n}, dt, memory::dims{n, 1});
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      dnnl::matmul::primitive_desc pd(eng, e->a, e->b, e->c, attr);
      e->prim = dnnl::matmul(pd);
      e->scratch = pd.scratchpad_desc();
      it = cache.emplace(key.str(), std::move(e)).first;
    }
    Entry* e = it->second.get();
    dnnl::stream stream(eng);
    memory am(e->a, eng, a.untyped_data()), bm(e->b, eng, b.untyped_data()), cm(e->c, eng, c->untyped_data());
    memory sm(e->scratch, eng, jaxcnn::Scratch(e->scratch.get_size()));
    e->prim.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm},
                             {DNNL_ARG_SCRATCHPAD, sm}});
    stream.wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("onednn matmul: ") + err.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnMatMul, MatMul,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));
