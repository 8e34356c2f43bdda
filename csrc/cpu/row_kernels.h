// Per-row CPU kernels: the channel max of a run of pixels, and the normalisation of a run of map values.
// Scalar versions work for any strides and any CPU; AVX2 versions (x86 with GCC/Clang) are compiled
// with a function-level target attribute and picked at run time, so the extension needs no -mavx2
// and still runs on older CPUs.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../normalize.h"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define SALRT_HAVE_AVX2_KERNELS 1
#include <immintrin.h>
#define SALRT_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define SALRT_HAVE_AVX2_KERNELS 0
#endif

namespace salrt::cpu {

// Strides (in elements) of one row of pixels.
struct RowLayout {
  int64_t channels, channel_stride, pixel_stride;
};

// Running min/max of |m| bit patterns (see normalize.h for why integers).
struct BitsRange {
  int32_t lo = kNoPixelBits;
  int32_t hi = 0;
  void add(int32_t b) {
    lo = std::min(lo, b);
    hi = std::max(hi, b);
  }
  void merge(const BitsRange& o) {
    lo = std::min(lo, o.lo);
    hi = std::max(hi, o.hi);
  }
};

inline int32_t abs_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return static_cast<int32_t>(b & kAbsMask);
}
inline int32_t abs_bits(c10::Half v) { return abs_bits(static_cast<float>(v)); }
inline int32_t abs_bits(c10::BFloat16 v) { return static_cast<int32_t>((uint32_t{v.x} << 16) & kAbsMask); }

// dst[i] = max_c |src[i * pixel_stride + c * channel_stride]| for i < len; folds dst into range.
template <typename T>
using ChannelMaxRowFn = void (*)(const T* src, int64_t len, const RowLayout& layout, float* dst, BitsRange& range);

template <typename T>
void channel_max_row_scalar(const T* src, int64_t len, const RowLayout& layout, float* dst, BitsRange& range) {
  for (int64_t i = 0; i < len; ++i) {
    const T* px = src + i * layout.pixel_stride;
    int32_t m = 0;
    for (int64_t c = 0; c < layout.channels; ++c) m = std::max(m, abs_bits(px[c * layout.channel_stride]));
    dst[i] = bits_to_float(m);
    range.add(m);
  }
}

// Output writers: the float and uint8 maps share every loop and differ only in the final store.
struct FloatOut {
  using type = float;
  static void store(float* dst, float v) { *dst = v; }
};

struct U8Out {
  using type = uint8_t;
  // round-half-to-even(255 * v) clamped to [0, 255]; NaN -> 0 (fmax drops NaN, like maxps/fmaxf).
  static void store(uint8_t* dst, float v) {
    const float t = std::fmin(std::fmax(v * 255.0f, 0.0f), 255.0f);
    *dst = static_cast<uint8_t>(std::nearbyint(t));
  }
};

template <class Out>
using NormalizeRowFn = void (*)(const float* m, typename Out::type* dst, int64_t len, Affine a);

template <class Out>
void normalize_row_scalar(const float* m, typename Out::type* dst, int64_t len, Affine a) {
  for (int64_t i = 0; i < len; ++i) Out::store(dst + i, apply_affine(a, m[i]));
}

#if SALRT_HAVE_AVX2_KERNELS

SALRT_AVX2 inline __m256i abs_bits8(const float* p) {
  return _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), _mm256_set1_epi32(kAbsMask));
}
SALRT_AVX2 inline __m256i abs_bits8(const c10::Half* p) {  // F16C conversion keeps NaN and Inf
  const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_and_si256(_mm256_castps_si256(f), _mm256_set1_epi32(kAbsMask));
}
SALRT_AVX2 inline __m256i abs_bits8(const c10::BFloat16* p) {  // bf16 is the top half of a float
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_and_si256(_mm256_slli_epi32(w, 16), _mm256_set1_epi32(kAbsMask));
}

SALRT_AVX2 inline void fold_range(__m256i lo, __m256i hi, BitsRange& range) {
  alignas(32) int32_t l[8], h[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(l), lo);
  _mm256_store_si256(reinterpret_cast<__m256i*>(h), hi);
  for (int k = 0; k < 8; ++k) {
    range.lo = std::min(range.lo, l[k]);
    range.hi = std::max(range.hi, h[k]);
  }
}

// Pixels contiguous within a channel (NCHW rows): one unaligned 8-wide load per channel.
template <typename T>
SALRT_AVX2 void channel_max_row_planar_avx2(const T* src, int64_t len, const RowLayout& layout, float* dst,
                                            BitsRange& range) {
  __m256i lo = _mm256_set1_epi32(kNoPixelBits), hi = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const T* p = src + i;
    __m256i m = abs_bits8(p);
    for (int64_t c = 1; c < layout.channels; ++c) m = _mm256_max_epi32(m, abs_bits8(p + c * layout.channel_stride));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), m);
    lo = _mm256_min_epi32(lo, m);
    hi = _mm256_max_epi32(hi, m);
  }
  fold_range(lo, hi, range);
  channel_max_row_scalar(src + i, len - i, layout, dst + i, range);
}

// Interleaved RGB (channels_last, C == 3): 8 pixels are 24 contiguous values in three registers a, b, c.
// Channel k of the 8 pixels sits in 8 distinct lanes across a, b, c, so two blends collect it; the
// three blends come out as the same pixel order rotated by 0, 1 and 2 lanes, so two rotations align
// them, and one permutation after the max restores pixel order (it is its own inverse).
template <typename T>
SALRT_AVX2 void channel_max_row_rgb_avx2(const T* src, int64_t len, const RowLayout& layout, float* dst,
                                         BitsRange& range) {
  const __m256i rot1 = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
  const __m256i rot2 = _mm256_setr_epi32(2, 3, 4, 5, 6, 7, 0, 1);
  const __m256i to_pixel_order = _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5);
  __m256i lo = _mm256_set1_epi32(kNoPixelBits), hi = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const T* p = src + 3 * i;
    const __m256i a = abs_bits8(p), b = abs_bits8(p + 8), c = abs_bits8(p + 16);
    const __m256i ch0 = _mm256_blend_epi32(_mm256_blend_epi32(a, b, 0x92), c, 0x24);  // lanes: px 0 3 6 1 4 7 2 5
    const __m256i ch1 = _mm256_blend_epi32(_mm256_blend_epi32(a, b, 0x24), c, 0x49);  // px 5 0 3 6 1 4 7 2
    const __m256i ch2 = _mm256_blend_epi32(_mm256_blend_epi32(a, b, 0x49), c, 0x92);  // px 2 5 0 3 6 1 4 7
    const __m256i m = _mm256_max_epi32(
        ch0, _mm256_max_epi32(_mm256_permutevar8x32_epi32(ch1, rot1), _mm256_permutevar8x32_epi32(ch2, rot2)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_permutevar8x32_epi32(m, to_pixel_order));
    lo = _mm256_min_epi32(lo, m);
    hi = _mm256_max_epi32(hi, m);
  }
  fold_range(lo, hi, range);
  channel_max_row_scalar(src + 3 * i, len - i, layout, dst + i, range);
}

SALRT_AVX2 inline void store8(float* dst, __m256 v) { _mm256_storeu_ps(dst, v); }
SALRT_AVX2 inline void store8(uint8_t* dst, __m256 v) {
  // maxps returns its second operand for NaN, so NaN -> 0 exactly as in U8Out::store.
  const __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v, _mm256_set1_ps(255.0f)), _mm256_setzero_ps()),
                                 _mm256_set1_ps(255.0f));
  const __m256i q = _mm256_cvtps_epi32(t);  // MXCSR default: round half to even, like nearbyint
  const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(w, w));
}

template <class Out>
SALRT_AVX2 void normalize_row_avx2(const float* m, typename Out::type* dst, int64_t len, Affine a) {
  const __m256 offset = _mm256_set1_ps(a.offset), scale = _mm256_set1_ps(a.scale);
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) store8(dst + i, _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(m + i), offset), scale));
  normalize_row_scalar<Out>(m + i, dst + i, len - i, a);
}

inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}

#else

inline bool cpu_has_avx2() { return false; }

#endif  // SALRT_HAVE_AVX2_KERNELS

template <typename T>
ChannelMaxRowFn<T> pick_channel_max_row(const RowLayout& layout) {
#if SALRT_HAVE_AVX2_KERNELS
  if (cpu_has_avx2()) {
    if (layout.pixel_stride == 1) return channel_max_row_planar_avx2<T>;
    if (layout.channels == 3 && layout.channel_stride == 1 && layout.pixel_stride == 3)
      return channel_max_row_rgb_avx2<T>;
  }
#endif
  return channel_max_row_scalar<T>;
}

template <class Out>
NormalizeRowFn<Out> pick_normalize_row() {
#if SALRT_HAVE_AVX2_KERNELS
  if (cpu_has_avx2()) return normalize_row_avx2<Out>;
#endif
  return normalize_row_scalar<Out>;
}

}  // namespace salrt::cpu
