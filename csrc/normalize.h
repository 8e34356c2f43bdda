// Per-image normalisation shared by the CPU and CUDA kernels (host and device code, no torch).
//
// The channel max m = max_c |g| is kept as the IEEE bit pattern of a non-negative float. Such patterns
// order like the floats they encode, and every NaN pattern (sign cleared) sorts above +Inf, so plain
// integer max both reduces and propagates NaN -- fmaxf/_mm256_max_ps would silently drop it. The running
// minimum ignores NaN, but the maximum is then NaN, which makes the whole image's map NaN below.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SALRT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SALRT_HOST_DEVICE inline
#endif

namespace salrt {

enum class Mode : int32_t { MinMax = 0, Max = 1, None = 2 };

constexpr uint32_t kAbsMask = 0x7fffffffu;
constexpr int32_t kNoPixelBits = 0x7fffffff;  // identity of the running minimum (a NaN pattern)

// out = (m - offset) * scale. The reciprocal is taken once per image; multiplying instead of dividing
// keeps the per-pixel pass cheap and yields the same bits on CPU and CUDA (both IEEE, no fast-math).
struct Affine {
  float offset;
  float scale;
};

SALRT_HOST_DEVICE float bits_to_float(int32_t b) {
  union {
    int32_t i;
    float f;
  } u{b};
  return u.f;
}

// A map whose range is at most eps times its max counts as constant and becomes all zeros: relative,
// because gradient scales span orders of magnitude (1e-16 in a randomly initialised EfficientNet-B0).
// A subnormal range (whose reciprocal would overflow) is constant too. A non-finite max (NaN or Inf
// anywhere in the image) makes the whole map NaN: a blown-up gradient is reported, not hidden.
SALRT_HOST_DEVICE Affine make_affine(int32_t lo_bits, int32_t hi_bits, Mode mode, double eps) {
  constexpr float kFloatMin = 1.17549435e-38f;  // FLT_MIN
  constexpr float kFloatMax = 3.40282347e+38f;  // FLT_MAX
  const float lo = bits_to_float(lo_bits);
  const float hi = bits_to_float(hi_bits);
  if (mode == Mode::None) return Affine{0.0f, 1.0f};
  if (!(hi <= kFloatMax)) return Affine{0.0f, bits_to_float(0x7fc00000)};  // quiet NaN
  const float offset = mode == Mode::MinMax ? lo : 0.0f;
  const float range = hi - offset;
  if (static_cast<double>(range) <= eps * static_cast<double>(hi) || range < kFloatMin) return Affine{0.0f, 0.0f};
  return Affine{offset, 1.0f / range};
}

SALRT_HOST_DEVICE float apply_affine(Affine a, float m) { return (m - a.offset) * a.scale; }

}  // namespace salrt
