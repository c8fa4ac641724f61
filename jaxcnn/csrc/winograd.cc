// An XLA FFI handler for float32 3x3 stride-1 convolutions by Winograd's minimal filtering,
// F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//
// Each 4x4 block of outputs ("tile") is computed from the 6x6 input patch under it:
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
// per input/output channel pair, where (.) is the elementwise product of 6x6 matrices. Summed
// over input channels, the 36 elementwise products become 36 matrix products
//   M_p = V_p U_p,   V_p: tiles x C (transformed input), U_p: C x O (transformed kernel),
// 36 * C * O multiply-adds per tile instead of the direct convolution's 144 * C * O.
//
// Layouts: x NHWC, kernel HWIO (3, 3, C, O), y NHWC; any zero padding (pad_lo given, the high
// padding implied by the output size). The tiles are split into blocks; each OpenMP thread
// transforms a block's input into a buffer of its own, runs the 36 products through oneDNN's
// sgemm (single-threaded inside the team), and transforms the products back into y, so that a
// block's data stays in the core's caches between the three steps.
//
// Built with the oneDNN shims by jaxcnn/onednn.py; lowering.conv_general_dilated routes
// eligible convolutions here (see jaxcnn/winograd.py).

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <omp.h>

#include "oneapi/dnnl/dnnl.h"
#include "shim.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kTile = 4;     // outputs per tile side
constexpr int64_t kPatch = 6;    // inputs per tile side: kTile + 3 - 1
constexpr int64_t kPoints = 36;  // kPatch * kPatch
constexpr int64_t kChunk = 64;   // channels transformed at a time (the vectorised inner loop)

struct Buffer {
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
  size_t size = 0;
  float* Get(size_t floats) {
    if (floats > size) {
      size = (floats + 1023) / 1024 * 1024;
      data.reset(static_cast<float*>(std::aligned_alloc(64, size * sizeof(float))));
    }
    return data.get();
  }
};

// One per OpenMP thread (the calls are serialised by OpenMPLock(), so reuse is safe).
std::vector<Buffer>& ThreadBuffers() {
  static std::vector<Buffer> buffers;
  return buffers;
}

Buffer& KernelBuffer() {
  static Buffer buffer;
  return buffer;
}

// The kernel transform of one 3x3 kernel per lane k < n: rows[kh * 3 + kw][k] holds g[kh][kw],
// out[p][k * stride] receives (G g G^T)[p].
inline void KernelTile(const float* const rows[9], int64_t n, float* out, int64_t plane, int64_t stride) {
  float t[kPatch][3][kChunk];  // G g: 6 x 3
  for (int64_t kw = 0; kw < 3; ++kw) {
    const float *g0 = rows[kw], *g1 = rows[3 + kw], *g2 = rows[6 + kw];
    for (int64_t k = 0; k < n; ++k) {
      const float a = g0[k], b = g1[k], d = g2[k];
      t[0][kw][k] = a * 0.25f;
      t[1][kw][k] = -(a + b + d) * (1.0f / 6);
      t[2][kw][k] = -(a - b + d) * (1.0f / 6);
      t[3][kw][k] = a * (1.0f / 24) + b * (1.0f / 12) + d * (1.0f / 6);
      t[4][kw][k] = a * (1.0f / 24) - b * (1.0f / 12) + d * (1.0f / 6);
      t[5][kw][k] = d;
    }
  }
  for (int64_t i = 0; i < kPatch; ++i) {
    float* u = out + (i * kPatch) * plane;
    for (int64_t k = 0; k < n; ++k) {
      const float a = t[i][0][k], b = t[i][1][k], d = t[i][2][k];
      u[0 * plane + k * stride] = a * 0.25f;
      u[1 * plane + k * stride] = -(a + b + d) * (1.0f / 6);
      u[2 * plane + k * stride] = -(a - b + d) * (1.0f / 6);
      u[3 * plane + k * stride] = a * (1.0f / 24) + b * (1.0f / 12) + d * (1.0f / 6);
      u[4 * plane + k * stride] = a * (1.0f / 24) - b * (1.0f / 12) + d * (1.0f / 6);
      u[5 * plane + k * stride] = d;
    }
  }
}

// U[p][ci][co] = (G g G^T)[p] for the 3x3 kernel g of input channel ci and output channel co:
// g = w[:, :, ci, co] for a (3, 3, C, O) kernel w, or, with flip, g = w[::-1, ::-1, co, ci] for a
// (3, 3, O, C) one (the input gradient's kernel, without materialising it).
void TransformKernel(const float* w, int64_t C, int64_t O, bool flip, float* U) {
  const int64_t plane = C * O;
  if (!flip) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t o0 = 0; o0 < O; o0 += kChunk) {
        const float* rows[9];
        for (int64_t k = 0; k < 9; ++k) rows[k] = w + k * plane + c * O + o0;
        KernelTile(rows, std::min(kChunk, O - o0), U + c * O + o0, plane, 1);
      }
    }
    return;
  }
  // w is (3, 3, O, C): the rows w[kh, kw, co, :] are contiguous in ci, so the lanes run over ci and
  // a block of kOut output channels is gathered before it is written, contiguous in co.
  constexpr int64_t kOut = 16;
  const int64_t ci_blocks = (C + kChunk - 1) / kChunk, co_blocks = (O + kOut - 1) / kOut;
#pragma omp parallel
  {
    std::vector<float> staged(kPoints * kOut * kChunk);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < ci_blocks * co_blocks; ++blk) {
      const int64_t ci0 = (blk / co_blocks) * kChunk, co0 = (blk % co_blocks) * kOut;
      const int64_t n = std::min(kChunk, C - ci0), m = std::min(kOut, O - co0);
      for (int64_t j = 0; j < m; ++j) {
        const float* rows[9];
        for (int64_t k = 0; k < 9; ++k) rows[k] = w + (8 - k) * plane + (co0 + j) * C + ci0;
        KernelTile(rows, n, staged.data() + j * kChunk, kOut * kChunk, 1);
      }
      for (int64_t p = 0; p < kPoints; ++p)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < m; ++j)
            U[p * plane + (ci0 + i) * O + co0 + j] = staged[(p * kOut + j) * kChunk + i];
    }
  }
}

struct Shape {
  int64_t n, h, w, c, oh, ow, o, pad_top, pad_left, tiles_h, tiles_w;
};

// V[p][t][c] = (B^T d B)[p] for the 6x6 patch d under tile t (zero outside x).
void TransformInput(const float* x, const Shape& s, int64_t t0, int64_t count, float* V) {
  const int64_t plane = count * s.c;
  for (int64_t t = 0; t < count; ++t) {
    const int64_t tile = t0 + t, per_image = s.tiles_h * s.tiles_w;
    const int64_t b = tile / per_image, ty = (tile % per_image) / s.tiles_w, tx = tile % s.tiles_w;
    const int64_t r0 = ty * kTile - s.pad_top, q0 = tx * kTile - s.pad_left;
    for (int64_t c0 = 0; c0 < s.c; c0 += kChunk) {
      const int64_t n = std::min(kChunk, s.c - c0);
      float d[kPatch][kPatch][kChunk];
      for (int64_t i = 0; i < kPatch; ++i) {
        const int64_t r = r0 + i;
        for (int64_t j = 0; j < kPatch; ++j) {
          const int64_t q = q0 + j;
          if (r < 0 || r >= s.h || q < 0 || q >= s.w) {
            std::memset(d[i][j], 0, n * sizeof(float));
          } else {
            std::memcpy(d[i][j], x + ((b * s.h + r) * s.w + q) * s.c + c0, n * sizeof(float));
          }
        }
      }
      float e[kPatch][kPatch][kChunk];  // B^T d
      for (int64_t j = 0; j < kPatch; ++j) {
        for (int64_t k = 0; k < n; ++k) {
          const float d0 = d[0][j][k], d1 = d[1][j][k], d2 = d[2][j][k], d3 = d[3][j][k],
                      d4 = d[4][j][k], d5 = d[5][j][k];
          e[0][j][k] = 4 * d0 - 5 * d2 + d4;
          e[1][j][k] = -4 * d1 - 4 * d2 + d3 + d4;
          e[2][j][k] = 4 * d1 - 4 * d2 - d3 + d4;
          e[3][j][k] = -2 * d1 - d2 + 2 * d3 + d4;
          e[4][j][k] = 2 * d1 - d2 - 2 * d3 + d4;
          e[5][j][k] = 4 * d1 - 5 * d3 + d5;
        }
      }
      for (int64_t i = 0; i < kPatch; ++i) {
        float* v = V + (i * kPatch) * plane + t * s.c + c0;
        for (int64_t k = 0; k < n; ++k) {
          const float d0 = e[i][0][k], d1 = e[i][1][k], d2 = e[i][2][k], d3 = e[i][3][k],
                      d4 = e[i][4][k], d5 = e[i][5][k];
          v[0 * plane + k] = 4 * d0 - 5 * d2 + d4;
          v[1 * plane + k] = -4 * d1 - 4 * d2 + d3 + d4;
          v[2 * plane + k] = 4 * d1 - 4 * d2 - d3 + d4;
          v[3 * plane + k] = -2 * d1 - d2 + 2 * d3 + d4;
          v[4 * plane + k] = 2 * d1 - d2 - 2 * d3 + d4;
          v[5 * plane + k] = 4 * d1 - 5 * d3 + d5;
        }
      }
    }
  }
}

// y[tile t] = A^T M_t A, written where it lies inside y.
void TransformOutput(const float* M, const Shape& s, int64_t t0, int64_t count, float* y) {
  const int64_t plane = count * s.o;
  for (int64_t t = 0; t < count; ++t) {
    const int64_t tile = t0 + t, per_image = s.tiles_h * s.tiles_w;
    const int64_t b = tile / per_image, ty = (tile % per_image) / s.tiles_w, tx = tile % s.tiles_w;
    const int64_t rows = std::min(kTile, s.oh - ty * kTile), cols = std::min(kTile, s.ow - tx * kTile);
    for (int64_t o0 = 0; o0 < s.o; o0 += kChunk) {
      const int64_t n = std::min(kChunk, s.o - o0);
      float e[kTile][kPatch][kChunk];  // A^T M
      for (int64_t j = 0; j < kPatch; ++j) {
        const float* m = M + j * plane + t * s.o + o0;
        for (int64_t k = 0; k < n; ++k) {
          const float m0 = m[0 * kPatch * plane + k], m1 = m[1 * kPatch * plane + k],
                      m2 = m[2 * kPatch * plane + k], m3 = m[3 * kPatch * plane + k],
                      m4 = m[4 * kPatch * plane + k], m5 = m[5 * kPatch * plane + k];
          e[0][j][k] = m0 + m1 + m2 + m3 + m4;
          e[1][j][k] = m1 - m2 + 2 * m3 - 2 * m4;
          e[2][j][k] = m1 + m2 + 4 * m3 + 4 * m4;
          e[3][j][k] = m1 - m2 + 8 * m3 - 8 * m4 + m5;
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        float out[kTile][kChunk];
        for (int64_t k = 0; k < n; ++k) {
          const float m0 = e[i][0][k], m1 = e[i][1][k], m2 = e[i][2][k], m3 = e[i][3][k],
                      m4 = e[i][4][k], m5 = e[i][5][k];
          out[0][k] = m0 + m1 + m2 + m3 + m4;
          out[1][k] = m1 - m2 + 2 * m3 - 2 * m4;
          out[2][k] = m1 + m2 + 4 * m3 + 4 * m4;
          out[3][k] = m1 - m2 + 8 * m3 - 8 * m4 + m5;
        }
        float* row = y + ((b * s.oh + ty * kTile + i) * s.ow + tx * kTile) * s.o + o0;
        for (int64_t j = 0; j < cols; ++j) std::memcpy(row + j * s.o, out[j], n * sizeof(float));
      }
    }
  }
}

ffi::Error Conv(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::Result<ffi::Buffer<ffi::F32>> y,
                ffi::Span<const int64_t> pad_lo, int64_t block, bool flip) {
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || wd.size() != 4 || yd.size() != 4 || pad_lo.size() != 2)
    return ffi::Error::InvalidArgument("winograd conv: expects NHWC activations and an HWIO kernel");
  const int64_t w_in = flip ? wd[3] : wd[2], w_out = flip ? wd[2] : wd[3];
  if (wd[0] != 3 || wd[1] != 3 || w_in != xd[3] || w_out != yd[3] || yd[0] != xd[0])
    return ffi::Error::InvalidArgument("winograd conv: needs a 3x3 kernel and consistent shapes");
  Shape s{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], yd[3], pad_lo[0], pad_lo[1], 0, 0};
  s.tiles_h = (s.oh + kTile - 1) / kTile;
  s.tiles_w = (s.ow + kTile - 1) / kTile;
  const int64_t tiles = s.n * s.tiles_h * s.tiles_w;
  if (tiles == 0 || s.c == 0 || s.o == 0) return ffi::Error::Success();

  std::lock_guard<std::mutex> guard(jaxcnn::OpenMPLock());
  static const int team = omp_get_max_threads();
  jaxcnn::OpenMPTeam scoped_team(team);
  float* U = KernelBuffer().Get(kPoints * s.c * s.o);
  TransformKernel(w.typed_data(), s.c, s.o, flip, U);

  const int64_t per_block = std::max<int64_t>(1, std::min(block, (tiles + team - 1) / team));
  const int64_t blocks = (tiles + per_block - 1) / per_block;
  auto& buffers = ThreadBuffers();
  if (static_cast<int>(buffers.size()) < team) buffers.resize(team);
  const float* xs = x.typed_data();
  float* ys = y->typed_data();
  int failed = 0;
#pragma omp parallel num_threads(team)
  {
    Buffer& own = buffers[omp_get_thread_num()];
    float* V = own.Get(kPoints * per_block * (s.c + s.o));
#pragma omp for schedule(dynamic, 1)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t t0 = blk * per_block, count = std::min(per_block, tiles - t0);
      float* M = V + kPoints * count * s.c;
      TransformInput(xs, s, t0, count, V);
      for (int64_t p = 0; p < kPoints; ++p) {
        if (dnnl_sgemm('N', 'N', count, s.o, s.c, 1.0f, V + p * count * s.c, s.c, U + p * s.c * s.o, s.o,
                       0.0f, M + p * count * s.o, s.o) != dnnl_success) {
#pragma omp atomic write
          failed = 1;
        }
      }
      TransformOutput(M, s, t0, count, ys);
    }
  }
  if (failed) return ffi::Error::Internal("winograd conv: oneDNN sgemm failed");
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradConv, Conv,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("pad_lo")
                                  .Attr<int64_t>("block")
                                  .Attr<bool>("flip"));
