// XLA FFI handlers running 2-D convolutions through oneDNN on the CPU: forward,
// gradient with respect to the input and gradient with respect to the kernel.
//
// Layouts are the ones flax uses: activations NHWC, kernels HWIO (grouped
// kernels HW(I/G)O with output channel o = g * O/G + j). oneDNN reads and
// writes the activations in place (format nhwc); the kernel is reordered into
// the layout the selected implementation wants (a small copy). Primitives are
// built once per (op, dtype, shapes, attributes) and cached. Executions are
// serialised by one mutex (shared with max_pool.cc): oneDNN already uses every core
// through OpenMP, and two concurrent OpenMP teams would only oversubscribe them.
//
// Built on first use by jaxcnn/cpu/build.py; see there for the Python side.

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "shim.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

enum class Op { kForward, kBackwardData, kBackwardWeights };

constexpr double kSmallConvFlops = 8e6;

struct Geometry {
  memory::data_type dtype;
  int64_t n, c, h, w, o, oh, ow, kh, kw, groups, threads;
  memory::dims strides, dilation, pad_lo, pad_hi;
};

struct Entry {
  dnnl::primitive prim;
  memory::desc src, weights_user, weights_prim, dst, scratch;
  bool reorder = false;
  dnnl::reorder weights_reorder;  // user -> prim (forward, backward data) or prim -> user
};

}  // namespace

namespace jaxcnn {
std::mutex& OpenMPLock() {
  static std::mutex lock;
  return lock;
}

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

void* Scratch(size_t bytes) {
  static jaxcnn::Arena arena;
  return arena.Get(bytes);
}
}  // namespace jaxcnn

namespace {
using jaxcnn::Engine;

jaxcnn::Arena& WeightsArena() {
  static jaxcnn::Arena arena;
  return arena;
}

std::map<std::string, std::unique_ptr<Entry>>& Cache() {
  static std::map<std::string, std::unique_ptr<Entry>> cache;
  return cache;
}

memory::desc Activation(const Geometry& g, int64_t c, int64_t h, int64_t w) {
  return memory::desc({g.n, c, h, w}, g.dtype, memory::format_tag::nhwc);
}

// The flax kernel (KH, KW, I/G, O) described in oneDNN's logical order.
memory::desc UserWeights(const Geometry& g) {
  const int64_t ig = g.c / g.groups, og = g.o / g.groups;
  if (g.groups == 1) {
    return memory::desc({g.o, g.c, g.kh, g.kw}, g.dtype,
                        memory::dims{1, g.o, g.kw * g.c * g.o, g.c * g.o});
  }
  return memory::desc({g.groups, og, ig, g.kh, g.kw}, g.dtype,
                      memory::dims{og, 1, g.o, g.kw * ig * g.o, ig * g.o});
}

memory::desc AnyWeights(const Geometry& g) {
  const int64_t ig = g.c / g.groups, og = g.o / g.groups;
  if (g.groups == 1) return memory::desc({g.o, g.c, g.kh, g.kw}, g.dtype, memory::format_tag::any);
  return memory::desc({g.groups, og, ig, g.kh, g.kw}, g.dtype, memory::format_tag::any);
}

std::string Key(Op op, const Geometry& g) {
  std::ostringstream s;
  s << static_cast<int>(op) << ':' << static_cast<int>(g.dtype) << ':' << g.n << ',' << g.c << ',' << g.h
    << ',' << g.w << ',' << g.o << ',' << g.oh << ',' << g.ow << ',' << g.kh << ',' << g.kw << ','
    << g.groups << ',' << g.threads;
  for (const auto* v : {&g.strides, &g.dilation, &g.pad_lo, &g.pad_hi})
    for (auto x : *v) s << ',' << x;
  return s.str();
}

Entry* Build(Op op, const Geometry& g) {
  auto& cache = Cache();
  const std::string key = Key(op, g);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();

  auto& eng = Engine();
  auto entry = std::make_unique<Entry>();
  entry->src = Activation(g, g.c, g.h, g.w);
  entry->dst = Activation(g, g.o, g.oh, g.ow);
  entry->weights_user = UserWeights(g);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto algo = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(
      eng, dnnl::prop_kind::forward_training, algo, entry->src, AnyWeights(g), entry->dst, g.strides,
      g.dilation, g.pad_lo, g.pad_hi, attr);
  if (op == Op::kForward) {
    entry->prim = dnnl::convolution_forward(fwd);
    entry->weights_prim = fwd.weights_desc();
    entry->scratch = fwd.scratchpad_desc();
  } else if (op == Op::kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(eng, algo, entry->src, AnyWeights(g), entry->dst,
                                                       g.strides, g.dilation, g.pad_lo, g.pad_hi, fwd,
                                                       attr);
    entry->prim = dnnl::convolution_backward_data(pd);
    entry->weights_prim = pd.weights_desc();
    entry->scratch = pd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(eng, algo, entry->src, AnyWeights(g),
                                                          entry->dst, g.strides, g.dilation, g.pad_lo,
                                                          g.pad_hi, fwd, attr);
    entry->prim = dnnl::convolution_backward_weights(pd);
    entry->weights_prim = pd.diff_weights_desc();
    entry->scratch = pd.scratchpad_desc();
  }
  entry->reorder = entry->weights_prim != entry->weights_user;
  if (entry->reorder) {
    if (op == Op::kBackwardWeights) {
      entry->weights_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
          eng, entry->weights_prim, eng, entry->weights_user));
    } else {
      entry->weights_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
          eng, entry->weights_user, eng, entry->weights_prim));
    }
  }
  Entry* raw = entry.get();
  cache.emplace(key, std::move(entry));
  return raw;
}

ffi::Error MakeGeometry(ffi::AnyBuffer src, ffi::AnyBuffer dst, ffi::AnyBuffer kernel,
                        ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
                        ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi, int64_t groups,
                        Geometry* g) {
  if (src.element_type() != dst.element_type() || src.element_type() != kernel.element_type())
    return ffi::Error::InvalidArgument("onednn conv: operands must share one dtype");
  if (src.element_type() == ffi::DataType::F32) {
    g->dtype = memory::data_type::f32;
  } else if (src.element_type() == ffi::DataType::BF16) {
    g->dtype = memory::data_type::bf16;
  } else {
    return ffi::Error::InvalidArgument("onednn conv: only float32 and bfloat16 are supported");
  }
  auto s = src.dimensions(), d = dst.dimensions(), k = kernel.dimensions();
  if (s.size() != 4 || d.size() != 4 || k.size() != 4 || strides.size() != 2 || dilation.size() != 2 ||
      pad_lo.size() != 2 || pad_hi.size() != 2)
    return ffi::Error::InvalidArgument("onednn conv: expects NHWC activations and an HWIO kernel");
  g->n = s[0];
  g->h = s[1];
  g->w = s[2];
  g->c = s[3];
  g->oh = d[1];
  g->ow = d[2];
  g->o = d[3];
  g->kh = k[0];
  g->kw = k[1];
  g->groups = groups;
  if (k[3] != g->o || k[2] * groups != g->c || d[0] != g->n)
    return ffi::Error::InvalidArgument("onednn conv: inconsistent shapes");
  g->strides = {strides[0], strides[1]};
  g->dilation = {dilation[0] - 1, dilation[1] - 1};  // oneDNN counts the inserted gaps
  g->pad_lo = {pad_lo[0], pad_lo[1]};
  g->pad_hi = {pad_hi[0], pad_hi[1]};
  // A small convolution runs on one thread: splitting a few MFLOP across an OpenMP team costs
  // more in barriers than it saves, the more so when other threads (input pipeline, XLA)
  // compete for the cores.
  static const int team = omp_get_max_threads();
  const double flops = 2.0 * g->n * g->oh * g->ow * g->o * (g->c / groups) * g->kh * g->kw;
  g->threads = flops < kSmallConvFlops ? 1 : team;
  return ffi::Error::Success();
}

ffi::Error Run(Op op, const Geometry& g, void* src, void* weights, void* dst) {
  try {
    std::lock_guard<std::mutex> guard(jaxcnn::OpenMPLock());
    jaxcnn::OpenMPTeam scoped_team(static_cast<int>(g.threads));
    Entry* e = Build(op, g);
    auto& eng = Engine();
    dnnl::stream stream(eng);
    memory src_m(e->src, eng, src), dst_m(e->dst, eng, dst), user_w(e->weights_user, eng, weights);
    memory prim_w = e->reorder ? memory(e->weights_prim, eng, WeightsArena().Get(e->weights_prim.get_size()))
                               : user_w;
    memory scratch(e->scratch, eng, jaxcnn::Scratch(e->scratch.get_size()));
    if (op == Op::kForward) {
      if (e->reorder) e->weights_reorder.execute(stream, user_w, prim_w);
      e->prim.execute(stream, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, prim_w}, {DNNL_ARG_DST, dst_m},
                               {DNNL_ARG_SCRATCHPAD, scratch}});
    } else if (op == Op::kBackwardData) {
      if (e->reorder) e->weights_reorder.execute(stream, user_w, prim_w);
      e->prim.execute(stream, {{DNNL_ARG_DIFF_SRC, src_m}, {DNNL_ARG_WEIGHTS, prim_w},
                               {DNNL_ARG_DIFF_DST, dst_m}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {
      e->prim.execute(stream, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_DIFF_WEIGHTS, prim_w},
                               {DNNL_ARG_DIFF_DST, dst_m}, {DNNL_ARG_SCRATCHPAD, scratch}});
      if (e->reorder) e->weights_reorder.execute(stream, prim_w, user_w);
    }
    stream.wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("onednn conv: ") + err.what());
  }
  return ffi::Error::Success();
}

#define JAXCNN_CONV_ATTRS                                       \
  .Attr<ffi::Span<const int64_t>>("strides")                    \
      .Attr<ffi::Span<const int64_t>>("dilation")               \
      .Attr<ffi::Span<const int64_t>>("pad_lo")                 \
      .Attr<ffi::Span<const int64_t>>("pad_hi")                 \
      .Attr<int64_t>("groups")

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
                   ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi, int64_t groups) {
  Geometry g;
  if (auto err = MakeGeometry(x, *y, w, strides, dilation, pad_lo, pad_hi, groups, &g); err.failure())
    return err;
  return Run(Op::kForward, g, x.untyped_data(), w.untyped_data(), y->untyped_data());
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                        ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
                        ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi, int64_t groups) {
  Geometry g;
  if (auto err = MakeGeometry(*dx, dy, w, strides, dilation, pad_lo, pad_hi, groups, &g); err.failure())
    return err;
  return Run(Op::kBackwardData, g, dx->untyped_data(), w.untyped_data(), dy.untyped_data());
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                           ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
                           ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
                           int64_t groups) {
  Geometry g;
  if (auto err = MakeGeometry(x, dy, *dw, strides, dilation, pad_lo, pad_hi, groups, &g); err.failure())
    return err;
  return Run(Op::kBackwardWeights, g, x.untyped_data(), dw->untyped_data(), dy.untyped_data());
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAXCNN_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvBackwardData, BackwardData,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAXCNN_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvBackwardWeights, BackwardWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAXCNN_CONV_ATTRS);

// 1 where oneDNN has bfloat16 convolutions (forward and both gradients) and matrix products on this
// CPU, else 0. oneDNN 3.2 builds them only from AVX-512 on: on an AVX2-only CPU (AMD Zen 3, say)
// creating their primitive descriptors fails, and jaxcnn keeps XLA's bfloat16 ops there.
extern "C" int JaxcnnBf16Supported() {
  try {
    auto& eng = Engine();
    const auto bf16 = memory::data_type::bf16;
    const memory::desc src({1, 16, 8, 8}, bf16, memory::format_tag::nhwc);
    const memory::desc wei({16, 16, 3, 3}, bf16, memory::format_tag::any);
    const memory::dims one{1, 1}, none{0, 0};
    const auto algo = dnnl::algorithm::convolution_direct;
    dnnl::convolution_forward::primitive_desc fwd(eng, dnnl::prop_kind::forward_training, algo, src, wei,
                                                  src, one, none, one, one);
    dnnl::convolution_backward_data::primitive_desc bwd_data(eng, algo, src, wei, src, one, none, one, one,
                                                             fwd);
    dnnl::convolution_backward_weights::primitive_desc bwd_weights(eng, algo, src, wei, src, one, none, one,
                                                                   one, fwd);
    const memory::desc mat({16, 16}, bf16, memory::format_tag::ab);
    dnnl::matmul::primitive_desc product(eng, mat, mat, mat);
    return 1;
  } catch (const dnnl::error&) {
    return 0;
  }
}
