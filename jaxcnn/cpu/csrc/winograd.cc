// An XLA FFI handler for float32 3x3 and 5x5 stride-1 convolutions by Winograd's minimal
// filtering, F(4x4, 3x3) and F(2x2, 5x5) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016).
//
// Each block of outputs ("tile": 4x4 for a 3x3 kernel, 2x2 for a 5x5 one) is computed from the
// 6x6 input patch under it:
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
// per input/output channel pair, where (.) is the elementwise product of 6x6 matrices. Both use
// the same six interpolation points (0, 1, -1, 2, -2, infinity), so they share the input
// transform B^T; G (6 x r) and A^T (tile x 6) differ. Summed over input channels, the 36
// elementwise products become 36 matrix products
//   M_p = V_p U_p,   V_p: tiles x C (transformed input), U_p: C x O (transformed kernel),
// 36 * C * O multiply-adds per tile instead of the direct convolution's 144 (3x3) or 100 (5x5).
//
// Layouts: x NHWC, kernel HWIO (r, r, C, O), y NHWC; any zero padding (pad_lo given, the high
// padding implied by the output size). The tiles are split into blocks; each OpenMP thread
// transforms a block's input into a buffer of its own, runs the 36 products through oneDNN's
// sgemm (single-threaded inside the team), and transforms the products back into y, so that a
// block's data stays in the core's caches between the three steps.
//
// For fixed weights the kernel's transform U (36, C, O) can be made once beforehand
// (JaxcnnWinogradKernel) and passed in its place (JaxcnnWinogradConvTransformed): the same
// schedules, reading U instead of making it.
//
// Built with the oneDNN shims by jaxcnn/cpu/build.py; ops.conv_general_dilated routes
// eligible convolutions here (see jaxcnn/cpu/winograd.py).

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

constexpr int64_t kPatch = 6;    // inputs per tile side: the tile's outputs + the kernel's taps - 1
constexpr int64_t kPoints = 36;  // kPatch * kPatch
constexpr int64_t kChunk = 64;   // channels transformed at a time (the vectorised inner loop)

using jaxcnn::Arena;

// One per OpenMP thread (the calls are serialised by OpenMPLock(), so reuse is safe).
std::vector<Arena>& ThreadBuffers() {
  static std::vector<Arena> buffers;
  return buffers;
}

Arena& SharedBuffer() {  // the transformed kernel (many tiles) or input (few tiles)
  static Arena buffer;
  return buffer;
}

// G's rows applied to r kernel taps g[0..r) (F(4x4, 3x3): r = 3, F(2x2, 5x5): r = 5): the taps'
// polynomial evaluated at 0, 1, -1, 2, -2 (scaled by 1/4, -1/6, -1/6, 1/24, 1/24) and its leading
// coefficient (the point at infinity). Both tile sizes share these points, hence B^T.
template <int R>
inline void ApplyG(const float* g, float* out);

template <>
inline void ApplyG<3>(const float* g, float* t) {
  const float a = g[0], b = g[1], d = g[2];
  t[0] = a * 0.25f;
  t[1] = -(a + b + d) * (1.0f / 6);
  t[2] = -(a - b + d) * (1.0f / 6);
  t[3] = a * (1.0f / 24) + b * (1.0f / 12) + d * (1.0f / 6);
  t[4] = a * (1.0f / 24) - b * (1.0f / 12) + d * (1.0f / 6);
  t[5] = d;
}

template <>
inline void ApplyG<5>(const float* g, float* t) {
  const float even = g[0] + g[2] + g[4], odd = g[1] + g[3];
  const float even2 = g[0] + 4 * g[2] + 16 * g[4], odd2 = 2 * g[1] + 8 * g[3];
  t[0] = g[0] * 0.25f;
  t[1] = -(even + odd) * (1.0f / 6);
  t[2] = -(even - odd) * (1.0f / 6);
  t[3] = (even2 + odd2) * (1.0f / 24);
  t[4] = (even2 - odd2) * (1.0f / 24);
  t[5] = g[4];
}

// The kernel transform of one R x R kernel per lane k < n: rows[kh * R + kw][k] holds g[kh][kw],
// out[p * plane + k] receives (G g G^T)[p].
template <int R>
inline void KernelTile(const float* const rows[R * R], int64_t n, float* out, int64_t plane) {
  float t[kPatch][R][kChunk];  // G g: 6 x R
  for (int64_t kw = 0; kw < R; ++kw) {
    for (int64_t k = 0; k < n; ++k) {
      float g[R], e[kPatch];
      for (int kh = 0; kh < R; ++kh) g[kh] = rows[kh * R + kw][k];
      ApplyG<R>(g, e);
      for (int i = 0; i < kPatch; ++i) t[i][kw][k] = e[i];
    }
  }
  for (int64_t i = 0; i < kPatch; ++i) {
    float* u = out + (i * kPatch) * plane;
    for (int64_t k = 0; k < n; ++k) {
      float g[R], e[kPatch];
      for (int kw = 0; kw < R; ++kw) g[kw] = t[i][kw][k];
      ApplyG<R>(g, e);
      for (int j = 0; j < kPatch; ++j) u[j * plane + k] = e[j];
    }
  }
}

// U[p][ci][j] (row stride ldu, plane C * ldu) = (G g G^T)[p] for input channels ci in [c0, c1) and
// output channels o0 + j, j < on <= kChunk, of the R x R kernel g: w[:, :, ci, o] of an (R, R, C, O)
// kernel w, or, with flip, w[::-1, ::-1, o, ci] of an (R, R, O, C) one (the input gradient's
// kernel, read in place). The flipped rows are contiguous in ci, so their lanes run over ci and
// the results are staged (kPoints * kChunk * kChunk floats) to be written contiguous in j.
template <int R>
void KernelBlock(const float* w, int64_t C, int64_t O, bool flip, int64_t c0, int64_t c1, int64_t o0,
                 int64_t on, float* U, int64_t ldu, float* staging) {
  const int64_t plane = C * O, uplane = C * ldu;
  if (!flip) {
    for (int64_t ci = c0; ci < c1; ++ci) {
      const float* rows[R * R];
      for (int64_t k = 0; k < R * R; ++k) rows[k] = w + k * plane + ci * O + o0;
      KernelTile<R>(rows, on, U + ci * ldu, uplane);
    }
    return;
  }
  for (int64_t ci0 = c0; ci0 < c1; ci0 += kChunk) {
    const int64_t n = std::min(kChunk, c1 - ci0);
    for (int64_t j = 0; j < on; ++j) {
      const float* rows[R * R];
      for (int64_t k = 0; k < R * R; ++k) rows[k] = w + (R * R - 1 - k) * plane + (o0 + j) * C + ci0;
      KernelTile<R>(rows, n, staging + j * kChunk, on * kChunk);
    }
    for (int64_t p = 0; p < kPoints; ++p)
      for (int64_t i = 0; i < n; ++i) {
        float* u = U + p * uplane + (ci0 + i) * ldu;
        for (int64_t j = 0; j < on; ++j) u[j] = staging[(p * on + j) * kChunk + i];
      }
  }
}

struct Shape {
  int64_t n, h, w, c, oh, ow, o, pad_top, pad_left, r, tile, tiles_h, tiles_w, tiles;  // tile = 7 - r
};

void KernelSlice(const float* w, const Shape& s, bool flip, int64_t c0, int64_t c1, int64_t o0, int64_t on,
                 float* U, int64_t ldu, float* staging) {
  (s.r == 3 ? KernelBlock<3> : KernelBlock<5>)(w, s.c, s.o, flip, c0, c1, o0, on, U, ldu, staging);
}

// V[p * plane + t * C + c] = (B^T d B)[p] for the 6x6 patch d under tile t0 + t, t < count (zero
// outside x).
void TransformInput(const float* x, const Shape& s, int64_t t0, int64_t count, float* V, int64_t plane) {
  for (int64_t t = 0; t < count; ++t) {
    const int64_t tile = t0 + t, per_image = s.tiles_h * s.tiles_w;
    const int64_t b = tile / per_image, ty = (tile % per_image) / s.tiles_w, tx = tile % s.tiles_w;
    const int64_t r0 = ty * s.tile - s.pad_top, q0 = tx * s.tile - s.pad_left;
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

// A^T's rows applied to the 6 products m[0..6): the tile's outputs, from the same points as G.
template <int T>
inline void ApplyAT(const float* m, float* y);

template <>
inline void ApplyAT<4>(const float* m, float* y) {
  y[0] = m[0] + m[1] + m[2] + m[3] + m[4];
  y[1] = m[1] - m[2] + 2 * m[3] - 2 * m[4];
  y[2] = m[1] + m[2] + 4 * m[3] + 4 * m[4];
  y[3] = m[1] - m[2] + 8 * m[3] - 8 * m[4] + m[5];
}

template <>
inline void ApplyAT<2>(const float* m, float* y) {
  y[0] = m[0] + m[1] + m[2] + m[3] + m[4];
  y[1] = m[1] - m[2] + 2 * m[3] - 2 * m[4] + m[5];
}

// y[tile t0 + t][o0 + j] = (A^T M A) for M[p * plane + t * ldm + j], t < count, j < on; written
// where it lies inside y.
template <int T>
void TransformOutputT(const float* M, const Shape& s, int64_t t0, int64_t count, int64_t o0, int64_t on,
                      int64_t ldm, int64_t plane, float* y) {
  for (int64_t t = 0; t < count; ++t) {
    const int64_t tile = t0 + t, per_image = s.tiles_h * s.tiles_w;
    const int64_t b = tile / per_image, ty = (tile % per_image) / s.tiles_w, tx = tile % s.tiles_w;
    const int64_t rows = std::min<int64_t>(T, s.oh - ty * T), cols = std::min<int64_t>(T, s.ow - tx * T);
    for (int64_t j0 = 0; j0 < on; j0 += kChunk) {
      const int64_t n = std::min(kChunk, on - j0);
      float e[T][kPatch][kChunk];  // A^T M
      for (int64_t j = 0; j < kPatch; ++j) {
        const float* m = M + j * plane + t * ldm + j0;
        for (int64_t k = 0; k < n; ++k) {
          float col[kPatch], out[T];
          for (int i = 0; i < kPatch; ++i) col[i] = m[i * kPatch * plane + k];
          ApplyAT<T>(col, out);
          for (int i = 0; i < T; ++i) e[i][j][k] = out[i];
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        float out[T][kChunk];
        for (int64_t k = 0; k < n; ++k) {
          float row[kPatch], res[T];
          for (int j = 0; j < kPatch; ++j) row[j] = e[i][j][k];
          ApplyAT<T>(row, res);
          for (int j = 0; j < T; ++j) out[j][k] = res[j];
        }
        float* dst = y + ((b * s.oh + ty * T + i) * s.ow + tx * T) * s.o + o0 + j0;
        for (int64_t j = 0; j < cols; ++j) std::memcpy(dst + j * s.o, out[j], n * sizeof(float));
      }
    }
  }
}

void TransformOutput(const float* M, const Shape& s, int64_t t0, int64_t count, int64_t o0, int64_t on,
                     int64_t ldm, int64_t plane, float* y) {
  (s.tile == 4 ? TransformOutputT<4> : TransformOutputT<2>)(M, s, t0, count, o0, on, ldm, plane, y);
}

// The 36 products M_p = V_p U_p of `rows` tiles: V_p (rows x C, row stride ldv), U_p (C x on, row
// stride ldu), M_p (rows x on, row stride ldm), planes p apart. Single-threaded inside the team.
bool Products(int64_t rows, int64_t C, int64_t on, const float* V, int64_t ldv, int64_t vplane,
              const float* U, int64_t ldu, int64_t uplane, float* M, int64_t ldm, int64_t mplane) {
  for (int64_t p = 0; p < kPoints; ++p) {
    if (dnnl_sgemm('N', 'N', rows, on, C, 1.0f, V + p * vplane, ldv, U + p * uplane, ldu, 0.0f,
                   M + p * mplane, ldm) != dnnl_success)
      return false;
  }
  return true;
}

// The whole kernel's transform U (36, s.c, s.o), made by the calling OpenMP team (call it from
// every thread of a parallel region); staging: kPoints * kChunk * kChunk floats of the thread's own.
void KernelAll(const float* w, const Shape& s, bool flip, float* U, float* staging) {
  const int64_t o_blocks = (s.o + kChunk - 1) / kChunk;
  const int64_t c_step = flip ? kChunk : 16, c_blocks = (s.c + c_step - 1) / c_step;
#pragma omp for schedule(static)
  for (int64_t blk = 0; blk < o_blocks * c_blocks; ++blk) {
    const int64_t o0 = (blk % o_blocks) * kChunk, c0 = (blk / o_blocks) * c_step;
    KernelSlice(w, s, flip, c0, std::min(s.c, c0 + c_step), o0, std::min(kChunk, s.o - o0), U + o0, s.o, staging);
  }
}

// Many tiles: the kernel is transformed once (unless pre holds its transform); each thread then
// takes blocks of `per_block` tiles through input transform, products and output transform, the
// block's data staying in its caches.
bool ByTileBlocks(const float* x, const float* w, const float* pre, bool flip, const Shape& s, int64_t per_block,
                  int team, float* y) {
  float* U = pre ? const_cast<float*>(pre) : SharedBuffer().Floats(kPoints * s.c * s.o);
  auto& buffers = ThreadBuffers();
  const int64_t blocks = (s.tiles + per_block - 1) / per_block;
  int failed = 0;
#pragma omp parallel num_threads(team)
  {
    Arena& own = buffers[omp_get_thread_num()];
    float* staging = own.Floats(kPoints * per_block * (s.c + s.o) + kPoints * kChunk * kChunk);
    if (!pre) KernelAll(w, s, flip, U, staging);   // the same on every thread: all meet its barrier
    float* V = staging + kPoints * kChunk * kChunk;
#pragma omp for schedule(dynamic, 1)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t t0 = blk * per_block, count = std::min(per_block, s.tiles - t0);
      float* M = V + kPoints * count * s.c;
      TransformInput(x, s, t0, count, V, count * s.c);
      if (!Products(count, s.c, s.o, V, s.c, count * s.c, U, s.o, s.c * s.o, M, s.o, count * s.o)) {
#pragma omp atomic write
        failed = 1;
      }
      TransformOutput(M, s, t0, count, 0, s.o, s.o, count * s.o, y);
    }
  }
  return !failed;
}

// Few tiles (the kernel is the bigger operand): all tiles' input is transformed once; each thread
// then takes blocks of kChunk output channels, transforming just that slice of the kernel into its
// caches, instead of the whole transformed kernel (36 C x O floats) going through memory.
bool ByChannelBlocks(const float* x, const float* w, const float* pre, bool flip, const Shape& s, int team,
                     float* y) {
  float* V = SharedBuffer().Floats(kPoints * s.tiles * s.c);
  auto& buffers = ThreadBuffers();
  const int64_t o_blocks = (s.o + kChunk - 1) / kChunk;
  int failed = 0;
#pragma omp parallel num_threads(team)
  {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < s.tiles; ++t) TransformInput(x, s, t, 1, V + t * s.c, s.tiles * s.c);
    Arena& own = buffers[omp_get_thread_num()];
    float* U = own.Floats(kPoints * (s.c + s.tiles + kChunk) * kChunk);
    float* M = U + kPoints * s.c * kChunk;
    float* staging = M + kPoints * s.tiles * kChunk;
#pragma omp for schedule(dynamic, 1)
    for (int64_t blk = 0; blk < o_blocks; ++blk) {
      const int64_t o0 = blk * kChunk, on = std::min(kChunk, s.o - o0);
      if (!pre) KernelSlice(w, s, flip, 0, s.c, o0, on, U, on, staging);
      const float* slice = pre ? pre + o0 : U;   // the made-beforehand transform: its columns o0.. in place
      const int64_t ldu = pre ? s.o : on;
      if (!Products(s.tiles, s.c, on, V, s.c, s.tiles * s.c, slice, ldu, s.c * ldu, M, on, s.tiles * on)) {
#pragma omp atomic write
        failed = 1;
      }
      TransformOutput(M, s, 0, s.tiles, o0, on, on, s.tiles * on, y);
    }
  }
  return !failed;
}

// The convolution of x by the kernel w (r x r; with flip, turned and its channel axes swapped) or,
// where pre is given, by its transform made beforehand (Kernel below), into y.
ffi::Error Run(ffi::Buffer<ffi::F32>& x, const float* w, const float* pre, int64_t r, int64_t c, int64_t o,
               ffi::Result<ffi::Buffer<ffi::F32>>& y, ffi::Span<const int64_t> pad_lo, int64_t block,
               int64_t few_tiles, bool flip) {
  auto xd = x.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || yd.size() != 4 || pad_lo.size() != 2 || (r != 3 && r != 5) || c != xd[3] || o != yd[3]
      || yd[0] != xd[0])
    return ffi::Error::InvalidArgument("winograd conv: needs NHWC activations, a 3x3 or 5x5 kernel and "
                                       "consistent shapes");
  const int64_t tile = kPatch + 1 - r;
  Shape s{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], yd[3], pad_lo[0], pad_lo[1], r, tile, 0, 0, 0};
  s.tiles_h = (s.oh + tile - 1) / tile;
  s.tiles_w = (s.ow + tile - 1) / tile;
  s.tiles = s.n * s.tiles_h * s.tiles_w;
  if (s.tiles == 0 || s.c == 0 || s.o == 0) return ffi::Error::Success();

  std::lock_guard<std::mutex> guard(jaxcnn::OpenMPLock());
  static const int team = omp_get_max_threads();
  jaxcnn::OpenMPTeam scoped_team(team);
  auto& buffers = ThreadBuffers();
  if (static_cast<int>(buffers.size()) < team) buffers.resize(team);
  const bool ok = s.tiles <= few_tiles
                      ? ByChannelBlocks(x.typed_data(), w, pre, flip, s, team, y->typed_data())
                      : ByTileBlocks(x.typed_data(), w, pre, flip, s,
                                     std::max<int64_t>(1, std::min(block, (s.tiles + team - 1) / team)), team,
                                     y->typed_data());
  if (!ok) return ffi::Error::Internal("winograd conv: oneDNN sgemm failed");
  return ffi::Error::Success();
}

ffi::Error Conv(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::Result<ffi::Buffer<ffi::F32>> y,
                ffi::Span<const int64_t> pad_lo, int64_t block, int64_t few_tiles, bool flip) {
  auto wd = w.dimensions();
  if (wd.size() != 4 || wd[1] != wd[0])
    return ffi::Error::InvalidArgument("winograd conv: expects an HWIO kernel (r, r, C, O)");
  return Run(x, w.typed_data(), nullptr, wd[0], flip ? wd[3] : wd[2], flip ? wd[2] : wd[3], y, pad_lo, block,
             few_tiles, flip);
}

// The same with the kernel's transform u (36, C, O) made beforehand by Kernel (fixed weights).
ffi::Error ConvTransformed(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> u, ffi::Result<ffi::Buffer<ffi::F32>> y,
                           ffi::Span<const int64_t> pad_lo, int64_t block, int64_t few_tiles, int64_t r) {
  auto ud = u.dimensions();
  if (ud.size() != 3 || ud[0] != kPoints)
    return ffi::Error::InvalidArgument("winograd conv: expects a transformed kernel (36, C, O)");
  return Run(x, nullptr, u.typed_data(), r, ud[1], ud[2], y, pad_lo, block, few_tiles, false);
}

// u (36, C, O) = the transforms G g G^T of the r x r kernel w (r, r, C, O) or, with flip, of the
// input gradient's kernel (w turned, its channel axes swapped; C and O are then w's O and C).
ffi::Error Kernel(ffi::Buffer<ffi::F32> w, ffi::Result<ffi::Buffer<ffi::F32>> u, bool flip) {
  auto wd = w.dimensions(), ud = u->dimensions();
  if (wd.size() != 4 || wd[1] != wd[0] || (wd[0] != 3 && wd[0] != 5) || ud.size() != 3 || ud[0] != kPoints
      || ud[1] != (flip ? wd[3] : wd[2]) || ud[2] != (flip ? wd[2] : wd[3]))
    return ffi::Error::InvalidArgument("winograd kernel: expects (r, r, C, O), r = 3 or 5, into (36, C, O)");
  Shape s{};
  s.r = wd[0];
  s.c = ud[1];
  s.o = ud[2];
  if (s.c == 0 || s.o == 0) return ffi::Error::Success();
  std::lock_guard<std::mutex> guard(jaxcnn::OpenMPLock());
  static const int team = omp_get_max_threads();
  jaxcnn::OpenMPTeam scoped_team(team);
  auto& buffers = ThreadBuffers();
  if (static_cast<int>(buffers.size()) < team) buffers.resize(team);
#pragma omp parallel num_threads(team)
  KernelAll(w.typed_data(), s, flip, u->typed_data(),
            buffers[omp_get_thread_num()].Floats(kPoints * kChunk * kChunk));
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
                                  .Attr<int64_t>("few_tiles")
                                  .Attr<bool>("flip"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradConvTransformed, ConvTransformed,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("pad_lo")
                                  .Attr<int64_t>("block")
                                  .Attr<int64_t>("few_tiles")
                                  .Attr<int64_t>("r"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradKernel, Kernel,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("flip"));
