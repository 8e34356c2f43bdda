// CUDA implementation of salrt::abs_channel_max_normalize{,_u8}.
//
// Two launches on the current stream, all images at once (grid.y walks images, grid.x pixel blocks):
//   1. channel_max_kernel: m = max_c |g| per pixel (written to the float output, or nowhere for uint8)
//      and per-image min/max of m, reduced per block with warp shuffles and merged with two integer
//      atomics per block into a [N, 2] int32 workspace.
//   2. normalize_kernel: out = (m - offset) * scale, m read back from the output (float, in place) or
//      recomputed from the input (uint8; saves a float scratch map, and the input is often still in L2).
// Bit patterns of |x| are non-negative int32 that order like the floats and put NaN above Inf (see
// normalize.h), so atomicMax/atomicMin on int need no float-ordering trick and NaN propagates exactly
// as on the CPU. The workspace stores (0x7fffffff - min) so a single zero fill initialises both slots.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "../common.h"

namespace salrt::cuda {
namespace {

constexpr int kThreads = 256;  // no __launch_bounds__: with it ptxas squeezed to 32 registers and spilled
constexpr int kMaxBlocksX = 1024;
constexpr int kMaxBlocksY = 65535;

struct Geo {  // Geometry with the fields the kernels need
  int64_t channels, channel_stride, cols, row_stride, col_stride, image_stride, pixels;
};

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T>
__device__ __forceinline__ int32_t abs_bits(T x) {
  return static_cast<int32_t>(__float_as_uint(static_cast<float>(x)) & kAbsMask);
}

// Channel max of the V pixels [q * V, q * V + V) of one image. V == 4 requires unit pixel stride in a
// single row and 4-element alignment of every channel plane (checked on the host), so each channel is
// one 16-byte (float) or 8-byte (half) load.
template <typename T, int V>
__device__ __forceinline__ void channel_max(const T* __restrict__ image, int64_t q, const Geo& g, int32_t (&m)[V]) {
  if constexpr (V > 1) {
    const T* p = image + q * V;
#pragma unroll
    for (int k = 0; k < V; ++k) m[k] = 0;
    for (int64_t c = 0; c < g.channels; ++c) {
      const Pack<T, V> x = *reinterpret_cast<const Pack<T, V>*>(p + c * g.channel_stride);
#pragma unroll
      for (int k = 0; k < V; ++k) m[k] = max(m[k], abs_bits(x.v[k]));
    }
  } else {
    const int64_t r = g.cols == g.pixels ? 0 : q / g.cols;  // skip the 64-bit division for single rows
    const int64_t col = q - r * g.cols;
    const T* p = image + r * g.row_stride + col * g.col_stride;
    int32_t v = 0;
    for (int64_t c = 0; c < g.channels; ++c) v = max(v, abs_bits(p[c * g.channel_stride]));
    m[0] = v;
  }
}

__device__ __forceinline__ int32_t warp_max(int32_t v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// Merges the block's (lo, hi) into ws[2n], ws[2n+1]; every thread of the block must call it.
__device__ void block_merge_range(int32_t lo, int32_t hi, int32_t* __restrict__ ws) {
  __shared__ int32_t s_lo[kThreads / 32], s_hi[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int32_t inv_lo = warp_max(kNoPixelBits - lo);
  hi = warp_max(hi);
  if (lane == 0) {
    s_lo[warp] = inv_lo;
    s_hi[warp] = hi;
  }
  __syncthreads();
  if (warp == 0) {
    inv_lo = lane < kThreads / 32 ? s_lo[lane] : 0;
    hi = lane < kThreads / 32 ? s_hi[lane] : 0;
    inv_lo = warp_max(inv_lo);
    hi = warp_max(hi);
    if (lane == 0) {
      atomicMax(ws, inv_lo);
      atomicMax(ws + 1, hi);
    }
  }
  __syncthreads();  // s_lo/s_hi are reused for the next image
}

template <typename T, int V>
__global__ void channel_max_kernel(const T* __restrict__ src, Geo g, int64_t n_images, float* __restrict__ map,
                                   int32_t* __restrict__ ws) {
  const int64_t groups = g.pixels / V;
  for (int64_t n = blockIdx.y; n < n_images; n += gridDim.y) {
    const T* image = src + n * g.image_stride;
    int32_t lo = kNoPixelBits, hi = 0;
    for (int64_t q = blockIdx.x * int64_t{kThreads} + threadIdx.x; q < groups; q += int64_t{gridDim.x} * kThreads) {
      int32_t m[V];
      channel_max<T, V>(image, q, g, m);
      Pack<float, V> out;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        lo = min(lo, m[k]);
        hi = max(hi, m[k]);
        out.v[k] = __int_as_float(m[k]);
      }
      if (map != nullptr) *reinterpret_cast<Pack<float, V>*>(map + n * g.pixels + q * V) = out;
    }
    block_merge_range(lo, hi, ws + 2 * n);
  }
}

__device__ __forceinline__ void store(float* dst, float v) { *dst = v; }
__device__ __forceinline__ void store(uint8_t* dst, float v) {
  // fmaxf returns the non-NaN operand, so NaN -> 0 exactly as on the CPU; rn = round half to even.
  *dst = static_cast<uint8_t>(__float2int_rn(fminf(fmaxf(v * 255.0f, 0.0f), 255.0f)));
}

// OutT == float: m is read from `out` itself. OutT == uint8_t: m is recomputed from the input.
template <typename T, int V, typename OutT>
__global__ void normalize_kernel(const T* __restrict__ src, Geo g, int64_t n_images, OutT* __restrict__ out,
                                 const int32_t* __restrict__ ws, Mode mode, double eps) {
  const int64_t groups = g.pixels / V;
  for (int64_t n = blockIdx.y; n < n_images; n += gridDim.y) {
    const Affine a = make_affine(kNoPixelBits - ws[2 * n], ws[2 * n + 1], mode, eps);
    OutT* image_out = out + n * g.pixels;
    for (int64_t q = blockIdx.x * int64_t{kThreads} + threadIdx.x; q < groups; q += int64_t{gridDim.x} * kThreads) {
      Pack<OutT, V> res;
      if constexpr (std::is_same_v<OutT, float>) {
        const Pack<float, V> m = *reinterpret_cast<const Pack<float, V>*>(image_out + q * V);
#pragma unroll
        for (int k = 0; k < V; ++k) store(&res.v[k], apply_affine(a, m.v[k]));
      } else {
        int32_t m[V];
        channel_max<T, V>(src + n * g.image_stride, q, g, m);
#pragma unroll
        for (int k = 0; k < V; ++k) store(&res.v[k], apply_affine(a, __int_as_float(m[k])));
      }
      *reinterpret_cast<Pack<OutT, V>*>(image_out + q * V) = res;
    }
  }
}

// 4-pixel vector loads need every channel plane of every image to start on a 4-element boundary.
template <typename T>
bool can_vectorize(const T* src, const Geometry& geo) {
  const auto aligned = [](int64_t v) { return v % 4 == 0; };
  return geo.rows == 1 && geo.col_stride == 1 && aligned(geo.pixels()) && aligned(geo.channel_stride) &&
         aligned(geo.image_stride) && reinterpret_cast<uintptr_t>(src) % (4 * sizeof(T)) == 0;
}

template <typename T, typename OutT>
void launch(const at::Tensor& grad, Mode mode, double eps, at::Tensor& out) {
  const Geometry geo = make_geometry(grad);
  const Geo g{geo.channels, geo.channel_stride, geo.cols, geo.row_stride, geo.col_stride, geo.image_stride,
              geo.pixels()};
  const T* src = grad.const_data_ptr<T>();
  OutT* dst = out.mutable_data_ptr<OutT>();
  constexpr bool kFloatOut = std::is_same_v<OutT, float>;
  // Tiny workspace: per image (0x7fffffff - min bits, max bits) of m.
  at::Tensor ws = at::zeros({geo.images, 2}, grad.options().dtype(at::kInt));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const auto run = [&](auto vec) {
    constexpr int V = decltype(vec)::value;
    const int64_t blocks_x = std::clamp<int64_t>((g.pixels / V + kThreads - 1) / kThreads, 1, kMaxBlocksX);
    const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(std::min<int64_t>(geo.images, kMaxBlocksY)));
    channel_max_kernel<T, V><<<grid, kThreads, 0, stream>>>(src, g, geo.images,
                                                            kFloatOut ? reinterpret_cast<float*>(dst) : nullptr,
                                                            ws.mutable_data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (kFloatOut && mode == Mode::None) return;
    normalize_kernel<T, V, OutT><<<grid, kThreads, 0, stream>>>(src, g, geo.images, dst,
                                                                ws.const_data_ptr<int32_t>(), mode, eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (can_vectorize(src, geo)) {
    run(std::integral_constant<int, 4>{});
  } else {
    run(std::integral_constant<int, 1>{});
  }
}

template <typename OutT>
at::Tensor abs_channel_max_normalize_impl(const at::Tensor& grad, std::string_view mode_name, double eps,
                                          OutKind kind) {
  check_input(grad, kind);
  const Mode mode = parse_mode(mode_name, kind);
  const c10::cuda::CUDAGuard device_guard(grad.device());
  at::Tensor out = at::empty({grad.size(0), grad.size(2), grad.size(3)},
                             grad.options().dtype(kind == OutKind::Float ? at::kFloat : at::kByte));
  if (out.numel() == 0) return out;
  dispatch_float_types(grad.scalar_type(), [&](auto tag) { launch<decltype(tag), OutT>(grad, mode, eps, out); });
  return out;
}

at::Tensor abs_channel_max_normalize_cuda(const at::Tensor& grad, c10::string_view mode, double eps) {
  return abs_channel_max_normalize_impl<float>(grad, mode, eps, OutKind::Float);
}

at::Tensor abs_channel_max_normalize_u8_cuda(const at::Tensor& grad, c10::string_view mode, double eps) {
  return abs_channel_max_normalize_impl<uint8_t>(grad, mode, eps, OutKind::U8);
}

}  // namespace

TORCH_LIBRARY_IMPL(salrt, CUDA, m) {
  m.impl("abs_channel_max_normalize", &abs_channel_max_normalize_cuda);
  m.impl("abs_channel_max_normalize_u8", &abs_channel_max_normalize_u8_cuda);
}

}  // namespace salrt::cuda
