// XLA FFI handlers for training-mode batch normalization over the channels (last axis) of
// an (M, C) view of an NHWC activation: the forward computes the batch mean and (biased)
// variance per channel and normalizes; the backward returns the input, scale and bias
// gradients, including the terms of cotangents on the mean and variance outputs.
//
// XLA:CPU compiles flax's batch norm into six or so fusions per layer (statistics,
// normalization, two gradient reductions, the input gradient, conversions); a ResNet-50
// train step has 53 of them, about half of its compile time, and they run at a fraction
// of the memory bandwidth. Here each direction is two passes over the data.
//
// Statistics accumulate in float over blocks of 64 rows and in double across blocks and
// threads; the variance E[x^2] - E[x]^2 is clamped at 0 as flax's fast variance is.
// x may be float32 or bfloat16; y, dy, the statistics, scale and bias are float32 (jaxcnn's
// batch norm computes in float32 whatever the compute dtype); dx has x's dtype.
//
// Built with onednn_conv.cc into one shared object by jaxcnn/cpu/build.py.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "shim.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Elements below which a call runs on the calling thread alone.
constexpr int64_t kSerialElements = 1 << 17;

using jaxcnn::Load;
using jaxcnn::Store;

// Per-channel sums of body(row) over the rows, split over the team: float partial sums over
// blocks of kBlockRows rows (vector speed), added into double totals (no loss over millions
// of rows). `acc` gets `k` arrays of c doubles (the k sums of each channel).
constexpr int64_t kBlockRows = 64;

template <typename Body>
void ChannelSums(int64_t m, int64_t c, int k, bool serial, std::vector<double>* acc, Body body) {
  const int threads = serial ? 1 : omp_get_max_threads();
  std::vector<double> part(static_cast<size_t>(threads) * k * c, 0.0);
#pragma omp parallel num_threads(threads) if (!serial)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    double* mine = part.data() + static_cast<size_t>(t) * k * c;
    std::vector<float> block(static_cast<size_t>(k) * c);
    const int64_t r0 = m * t / nt, r1 = m * (t + 1) / nt;
    for (int64_t b0 = r0; b0 < r1; b0 += kBlockRows) {
      std::fill(block.begin(), block.end(), 0.0f);
      for (int64_t r = b0; r < std::min(r1, b0 + kBlockRows); ++r) body(r, block.data());
      for (int64_t i = 0; i < k * c; ++i) mine[i] += block[i];
    }
  }
  acc->assign(static_cast<size_t>(k) * c, 0.0);
  for (int t = 0; t < threads; ++t)
    for (int64_t i = 0; i < k * c; ++i) (*acc)[i] += part[static_cast<size_t>(t) * k * c + i];
}

template <typename T>
void Forward(const T* x, const float* scale, const float* bias, float eps, int64_t m, int64_t c, float* y,
             float* mean_out, float* var_out) {
  const bool serial = m * c < kSerialElements;
  std::unique_lock<std::mutex> guard(jaxcnn::OpenMPLock(), std::defer_lock);
  if (!serial) guard.lock();
  std::vector<double> sums;
  ChannelSums(m, c, 2, serial, &sums, [&](int64_t r, float* acc) {
    const T* row = x + r * c;
    float* s1 = acc;
    float* s2 = acc + c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const float v = Load(row + j);
      s1[j] += v;
      s2[j] += v * v;
    }
  });
  std::vector<float> mul(c), add(c);
  for (int64_t j = 0; j < c; ++j) {
    const double mu = sums[j] / m, var = std::max(0.0, sums[c + j] / m - mu * mu);
    mean_out[j] = static_cast<float>(mu);
    var_out[j] = static_cast<float>(var);
    const double a = scale[j] / std::sqrt(var + eps);
    mul[j] = static_cast<float>(a);
    add[j] = static_cast<float>(bias[j] - mu * a);
  }
#pragma omp parallel for schedule(static) if (!serial)
  for (int64_t r = 0; r < m; ++r) {
    const T* row = x + r * c;
    float* out = y + r * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) out[j] = Load(row + j) * mul[j] + add[j];
  }
}

// dx = a * dy + b * x + k per channel, with
//   a = scale * rstd,  b = -scale * rstd^3 * S / m + 2 dvar / m,
//   k = -a * sum(dy) / m + dmean / m - b * mean,   S = sum(dy * (x - mean)),
// dscale = rstd * S, dbias = sum(dy).
template <typename T>
void Backward(const T* x, const float* dy, const float* scale, const float* mean, const float* var,
              const float* dmean, const float* dvar, float eps, int64_t m, int64_t c, T* dx, float* dscale,
              float* dbias) {
  const bool serial = m * c < kSerialElements;
  std::unique_lock<std::mutex> guard(jaxcnn::OpenMPLock(), std::defer_lock);
  if (!serial) guard.lock();
  std::vector<double> sums;
  ChannelSums(m, c, 2, serial, &sums, [&](int64_t r, float* acc) {
    const T* row = x + r * c;
    const float* g = dy + r * c;
    float* s1 = acc;
    float* s2 = acc + c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      s1[j] += g[j];
      s2[j] += g[j] * (Load(row + j) - mean[j]);
    }
  });
  std::vector<float> a(c), b(c), k(c);
  for (int64_t j = 0; j < c; ++j) {
    const double rstd = 1.0 / std::sqrt(static_cast<double>(var[j]) + eps);
    const double sdy = sums[j], s = sums[c + j];
    const double aj = scale[j] * rstd;
    const double bj = -scale[j] * rstd * rstd * rstd * s / m + 2.0 * dvar[j] / m;
    a[j] = static_cast<float>(aj);
    b[j] = static_cast<float>(bj);
    k[j] = static_cast<float>(-aj * sdy / m + static_cast<double>(dmean[j]) / m - bj * mean[j]);
    dscale[j] = static_cast<float>(rstd * s);
    dbias[j] = static_cast<float>(sdy);
  }
#pragma omp parallel for schedule(static) if (!serial)
  for (int64_t r = 0; r < m; ++r) {
    const T* row = x + r * c;
    const float* g = dy + r * c;
    T* out = dx + r * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) Store(out + j, a[j] * g[j] + b[j] * Load(row + j) + k[j]);
  }
}

ffi::Error Shape(ffi::AnyBuffer x, int64_t* m, int64_t* c) {
  auto d = x.dimensions();
  if (d.size() == 0) return ffi::Error::InvalidArgument("batch norm: expects an array with a channel axis");
  *c = d[d.size() - 1];
  *m = 1;
  for (size_t i = 0; i + 1 < d.size(); ++i) *m *= d[i];
  if (x.element_type() != ffi::DataType::F32 && x.element_type() != ffi::DataType::BF16)
    return ffi::Error::InvalidArgument("batch norm: only float32 and bfloat16 inputs are supported");
  if (*m == 0) return ffi::Error::InvalidArgument("batch norm: empty batch");
  return ffi::Error::Success();
}

// Calls f with a null pointer of x's element type: float, or uint16_t for bfloat16 (Shape checked it).
template <typename F>
void ForElementType(ffi::AnyBuffer x, F f) {
  if (x.element_type() == ffi::DataType::F32) {
    f(static_cast<float*>(nullptr));
  } else {
    f(static_cast<uint16_t*>(nullptr));
  }
}

ffi::Error BatchNormForward(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> bias,
                            ffi::Result<ffi::Buffer<ffi::F32>> y, ffi::Result<ffi::Buffer<ffi::F32>> mean,
                            ffi::Result<ffi::Buffer<ffi::F32>> var, float eps) {
  int64_t m, c;
  if (auto err = Shape(x, &m, &c); err.failure()) return err;
  ForElementType(x, [&](auto* element) {
    using T = std::remove_pointer_t<decltype(element)>;
    Forward(static_cast<const T*>(x.untyped_data()), scale.typed_data(), bias.typed_data(), eps, m, c,
            y->typed_data(), mean->typed_data(), var->typed_data());
  });
  return ffi::Error::Success();
}

ffi::Error BatchNormBackward(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> scale,
                             ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> var, ffi::Buffer<ffi::F32> dmean,
                             ffi::Buffer<ffi::F32> dvar, ffi::Result<ffi::AnyBuffer> dx,
                             ffi::Result<ffi::Buffer<ffi::F32>> dscale, ffi::Result<ffi::Buffer<ffi::F32>> dbias,
                             float eps) {
  int64_t m, c;
  if (auto err = Shape(x, &m, &c); err.failure()) return err;
  ForElementType(x, [&](auto* element) {
    using T = std::remove_pointer_t<decltype(element)>;
    Backward(static_cast<const T*>(x.untyped_data()), dy.typed_data(), scale.typed_data(), mean.typed_data(),
             var.typed_data(), dmean.typed_data(), dvar.typed_data(), eps, m, c,
             static_cast<T*>(dx->untyped_data()), dscale->typed_data(), dbias->typed_data());
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnBatchNormForward, BatchNormForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("eps"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnBatchNormBackward, BatchNormBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("eps"));
