// XLA FFI handlers for the NHWC max pool on the CPU: forward (optionally with the
// position of each window's maximum) and the gradient from those positions.
//
// XLA:CPU differentiates reduce_window(max) into select_and_scatter, which it runs
// several times slower than PyTorch; the strided-slice VJP in ops.py is better but
// still reads the input k*k times. Here the forward records, per output element,
// which of the kh*kw window cells held the maximum (one byte: i * kw + j, the
// first maximum in row-major window order, as select_and_scatter picks with
// ties), and the backward adds each output gradient to that one cell. The
// residual is that byte array, a quarter of the output in float32, instead of
// the input and the output.
//
// Padding cells (pad_lo before the input, whatever the output size implies
// after it) never win: a window's maximum is taken over its cells inside the
// input, and a NaN among them wins (it propagates, as lax.max does).
//
// Built with onednn_conv.cc into one shared object by jaxcnn/cpu/build.py.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>

#include <omp.h>

#include "shim.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Work (input cells read) below which a pool runs on the calling thread alone.
constexpr int64_t kSerialCells = 1 << 18;

using jaxcnn::Load;
using jaxcnn::Store;

struct Geometry {
  int64_t n, h, w, c, oh, ow, kh, kw, sh, sw, pt, pl;
};

ffi::Error MakeGeometry(ffi::AnyBuffer x, int64_t oh, int64_t ow, int64_t out_c,
                        ffi::Span<const int64_t> window, ffi::Span<const int64_t> strides,
                        ffi::Span<const int64_t> pad_lo, Geometry* g) {
  auto d = x.dimensions();
  if (d.size() != 4 || window.size() != 2 || strides.size() != 2 || pad_lo.size() != 2)
    return ffi::Error::InvalidArgument("max pool: expects NHWC arrays and 2-D window attributes");
  *g = {d[0], d[1], d[2], d[3], oh, ow, window[0], window[1], strides[0], strides[1], pad_lo[0], pad_lo[1]};
  if (out_c != g->c || g->kh * g->kw > 255 || g->sh < 1 || g->sw < 1)
    return ffi::Error::InvalidArgument("max pool: inconsistent shapes or a window over 255 cells");
  return ffi::Error::Success();
}

template <typename T>
void Forward(const Geometry& g, const T* x, T* y, uint8_t* arg) {
  const int64_t rows = g.n * g.oh, c = g.c;
  const bool serial = g.n * g.oh * g.ow * g.kh * g.kw * c < kSerialCells;
  std::unique_lock<std::mutex> guard(jaxcnn::OpenMPLock(), std::defer_lock);
  if (!serial) guard.lock();
#pragma omp parallel for schedule(static) if (!serial)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / g.oh, o = r % g.oh;
    const int64_t h0 = o * g.sh - g.pt;
    const int64_t i0 = std::max<int64_t>(0, -h0), i1 = std::min<int64_t>(g.kh, g.h - h0);
    float best[256];
    uint8_t where[256];
    for (int64_t q = 0; q < g.ow; ++q) {
      const int64_t w0 = q * g.sw - g.pl;
      const int64_t j0 = std::max<int64_t>(0, -w0), j1 = std::min<int64_t>(g.kw, g.w - w0);
      T* yo = y + (r * g.ow + q) * c;
      uint8_t* ao = arg ? arg + (r * g.ow + q) * c : nullptr;
      for (int64_t c0 = 0; c0 < c; c0 += 256) {
        const int64_t cn = std::min<int64_t>(256, c - c0);
        bool first = true;
        for (int64_t i = i0; i < i1; ++i) {
          for (int64_t j = j0; j < j1; ++j) {
            const T* xi = x + ((b * g.h + h0 + i) * g.w + w0 + j) * c + c0;
            const uint8_t k = static_cast<uint8_t>(i * g.kw + j);
            if (first) {
              for (int64_t e = 0; e < cn; ++e) {
                best[e] = Load(xi + e);
                where[e] = k;
              }
              first = false;
              continue;
            }
            for (int64_t e = 0; e < cn; ++e) {
              const float v = Load(xi + e);
              // a strictly larger value, or the first NaN
              const bool take = v > best[e] || (v != v && best[e] == best[e]);
              best[e] = take ? v : best[e];
              where[e] = take ? k : where[e];
            }
          }
        }
        if (first) {  // a window wholly in the padding (not produced by valid pool geometry)
          for (int64_t e = 0; e < cn; ++e) {
            best[e] = -INFINITY;
            where[e] = 255;
          }
        }
        for (int64_t e = 0; e < cn; ++e) Store(yo + c0 + e, best[e]);
        if (ao)
          for (int64_t e = 0; e < cn; ++e) ao[c0 + e] = where[e];
      }
    }
  }
}

// Backward of one image's channels [c0, c1) when the windows tile the input (kernel == stride,
// as in VGG's 2x2/2 pools): each cell gets its window's gradient or zero, in one vectorisable pass;
// the cells no window covers (the rows and columns a floor-mode pool drops) are zeroed.
template <typename T>
void TileBackward(const Geometry& g, const T* dy, const uint8_t* arg, T* image, int64_t c0, int64_t c1) {
  const T zero{};
  for (int64_t r = 0; r < g.h; ++r) {
    const int64_t o = (r + g.pt) / g.sh, i = (r + g.pt) % g.sh;
    for (int64_t col = 0; col < g.w; ++col) {
      const int64_t q = (col + g.pl) / g.sw, j = (col + g.pl) % g.sw;
      T* cell = image + (r * g.w + col) * g.c;
      if (o >= g.oh || q >= g.ow) {
        for (int64_t e = c0; e < c1; ++e) cell[e] = zero;
        continue;
      }
      const int64_t at = (o * g.ow + q) * g.c;
      const uint8_t k = static_cast<uint8_t>(i * g.kw + j);
      for (int64_t e = c0; e < c1; ++e) cell[e] = arg[at + e] == k ? dy[at + e] : zero;
    }
  }
}

template <typename T>
void Backward(const Geometry& g, const T* dy, const uint8_t* arg, T* dx) {
  // Windows overlap within an image, so the work splits over images and, when there
  // are fewer images than threads, over channel blocks too.
  const int threads = omp_get_max_threads();
  const bool serial = g.n * g.oh * g.ow * g.c < kSerialCells;
  const int64_t blocks = serial ? 1 : std::max<int64_t>(1, (threads + g.n - 1) / g.n);
  const int64_t width = (g.c + blocks - 1) / blocks;
  std::unique_lock<std::mutex> guard(jaxcnn::OpenMPLock(), std::defer_lock);
  if (!serial) guard.lock();
#pragma omp parallel for schedule(static) if (!serial)
  for (int64_t t = 0; t < g.n * blocks; ++t) {
    const int64_t b = t / blocks, c0 = (t % blocks) * width, c1 = std::min(g.c, c0 + width);
    if (c0 >= c1) continue;
    T* image = dx + b * g.h * g.w * g.c;
    if (g.kh == g.sh && g.kw == g.sw) {  // windows tile the input: every cell written once, no zeroing pass
      TileBackward(g, dy + b * g.oh * g.ow * g.c, arg + b * g.oh * g.ow * g.c, image, c0, c1);
      continue;
    }
    for (int64_t p = 0; p < g.h * g.w; ++p) std::memset(image + p * g.c + c0, 0, (c1 - c0) * sizeof(T));
    for (int64_t o = 0; o < g.oh; ++o) {
      for (int64_t q = 0; q < g.ow; ++q) {
        const int64_t at = ((b * g.oh + o) * g.ow + q) * g.c;
        const int64_t h0 = o * g.sh - g.pt, w0 = q * g.sw - g.pl;
        for (int64_t e = c0; e < c1; ++e) {
          const uint8_t k = arg[at + e];
          if (k == 255) continue;
          T* cell = image + ((h0 + k / g.kw) * g.w + w0 + k % g.kw) * g.c + e;
          if constexpr (sizeof(T) == 4) {
            *cell += dy[at + e];
          } else {
            Store(cell, Load(cell) + Load(dy + at + e));
          }
        }
      }
    }
  }
}

#define JAXCNN_POOL_ATTRS                        \
  .Attr<ffi::Span<const int64_t>>("window")      \
      .Attr<ffi::Span<const int64_t>>("strides") \
      .Attr<ffi::Span<const int64_t>>("pad_lo")

ffi::Error RunForward(ffi::AnyBuffer x, ffi::AnyBuffer* y, uint8_t* arg, ffi::Span<const int64_t> window,
                      ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo) {
  auto d = y->dimensions();
  if (d.size() != 4 || x.element_type() != y->element_type())
    return ffi::Error::InvalidArgument("max pool: input and output must be NHWC of one dtype");
  Geometry g;
  if (auto err = MakeGeometry(x, d[1], d[2], d[3], window, strides, pad_lo, &g); err.failure()) return err;
  if (x.element_type() == ffi::DataType::F32) {
    Forward(g, static_cast<const float*>(x.untyped_data()), static_cast<float*>(y->untyped_data()), arg);
  } else if (x.element_type() == ffi::DataType::BF16) {
    Forward(g, static_cast<const uint16_t*>(x.untyped_data()), static_cast<uint16_t*>(y->untyped_data()), arg);
  } else {
    return ffi::Error::InvalidArgument("max pool: only float32 and bfloat16 are supported");
  }
  return ffi::Error::Success();
}

ffi::Error PoolForward(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y, ffi::Span<const int64_t> window,
                       ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo) {
  return RunForward(x, &*y, nullptr, window, strides, pad_lo);
}

ffi::Error PoolForwardTrain(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y,
                            ffi::Result<ffi::Buffer<ffi::U8>> arg, ffi::Span<const int64_t> window,
                            ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo) {
  return RunForward(x, &*y, arg->typed_data(), window, strides, pad_lo);
}

ffi::Error PoolBackward(ffi::AnyBuffer dy, ffi::Buffer<ffi::U8> arg, ffi::Result<ffi::AnyBuffer> dx,
                        ffi::Span<const int64_t> window, ffi::Span<const int64_t> strides,
                        ffi::Span<const int64_t> pad_lo) {
  auto d = dy.dimensions();
  if (d.size() != 4 || dy.element_type() != dx->element_type() || arg.dimensions().size() != 4)
    return ffi::Error::InvalidArgument("max pool backward: gradients must be NHWC of one dtype");
  Geometry g;
  if (auto err = MakeGeometry(*dx, d[1], d[2], d[3], window, strides, pad_lo, &g); err.failure()) return err;
  if (dy.element_type() == ffi::DataType::F32) {
    Backward(g, static_cast<const float*>(dy.untyped_data()), arg.typed_data(),
             static_cast<float*>(dx->untyped_data()));
  } else if (dy.element_type() == ffi::DataType::BF16) {
    Backward(g, static_cast<const uint16_t*>(dy.untyped_data()), arg.typed_data(),
             static_cast<uint16_t*>(dx->untyped_data()));
  } else {
    return ffi::Error::InvalidArgument("max pool backward: only float32 and bfloat16 are supported");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnMaxPoolForward, PoolForward,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>() JAXCNN_POOL_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnMaxPoolForwardTrain, PoolForwardTrain,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::U8>>() JAXCNN_POOL_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnMaxPoolBackward, PoolBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::AnyBuffer>() JAXCNN_POOL_ATTRS);
