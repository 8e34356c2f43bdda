// CPU implementation of salrt::abs_channel_max_normalize{,_u8}.
//
// Work is cut into (image, pixel span) tasks. When every thread can own whole images, one task computes
// an image's channel max and normalises it while the map is still in cache. With fewer images than
// threads each image is split into spans: a first parallel pass writes the max and per-span min/max, the
// spans' ranges are combined per image, and a second parallel pass normalises.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <memory>
#include <vector>

#include "../common.h"
#include "row_kernels.h"

namespace salrt::cpu {
namespace {

constexpr int64_t kMinSpanPixels = 16384;  // below this, splitting an image costs more than it saves

// Channel max of pixels [begin, end) of one image into map[begin, end); returns their range.
template <typename T>
BitsRange channel_max_span(ChannelMaxRowFn<T> row_fn, const T* image, const Geometry& geo, int64_t begin,
                           int64_t end, float* map) {
  const RowLayout layout{geo.channels, geo.channel_stride, geo.col_stride};
  BitsRange range;
  for (int64_t p = begin; p < end;) {
    const int64_t r = p / geo.cols, c = p - r * geo.cols;
    const int64_t len = std::min(geo.cols - c, end - p);
    row_fn(image + r * geo.row_stride + c * geo.col_stride, len, layout, map + p, range);
    p += len;
  }
  return range;
}

// Spans per image: 1 when images alone keep every thread busy, else enough to even out the threads.
int64_t spans_per_image(int64_t images, int64_t pixels) {
  const int64_t threads = at::get_num_threads();
  if (threads <= 1 || images % threads == 0 || images >= 4 * threads) return 1;
  const int64_t max_spans = std::max<int64_t>(1, pixels / kMinSpanPixels);
  return std::min(threads, max_spans);
}

template <typename T, class Out>
void run(const at::Tensor& grad, Mode mode, double eps, at::Tensor& out) {
  using OutT = typename Out::type;
  constexpr bool kInPlace = std::is_same_v<OutT, float>;  // float maps are normalised where they lie
  const Geometry geo = make_geometry(grad);
  const int64_t n_images = geo.images, pixels = geo.pixels();
  const T* src = grad.const_data_ptr<T>();
  OutT* dst = out.mutable_data_ptr<OutT>();
  const auto channel_max_row = pick_channel_max_row<T>({geo.channels, geo.channel_stride, geo.col_stride});
  const auto normalize_row = pick_normalize_row<Out>();
  const auto normalize = [&](const float* map, int64_t n, int64_t begin, int64_t end, Affine a) {
    if (kInPlace && mode == Mode::None) return;  // the raw channel max is the result
    normalize_row(map + begin, dst + n * pixels + begin, end - begin, a);
  };

  const int64_t spans = spans_per_image(n_images, pixels);
  if (spans == 1) {
    at::parallel_for(0, n_images, 1, [&](int64_t first, int64_t last) {
      // uint8 output: the float map of the current image lives here (uninitialised, cache-hot)
      const std::unique_ptr<float[]> scratch(kInPlace ? nullptr : new float[pixels]);
      for (int64_t n = first; n < last; ++n) {
        float* map = kInPlace ? reinterpret_cast<float*>(dst + n * pixels) : scratch.get();
        const BitsRange r = channel_max_span(channel_max_row, src + n * geo.image_stride, geo, 0, pixels, map);
        normalize(map, n, 0, pixels, make_affine(r.lo, r.hi, mode, eps));
      }
    });
    return;
  }

  const int64_t span = (pixels + spans - 1) / spans;
  at::Tensor scratch = kInPlace ? at::Tensor() : at::empty({n_images * pixels}, grad.options().dtype(at::kFloat));
  float* maps = kInPlace ? reinterpret_cast<float*>(dst) : scratch.mutable_data_ptr<float>();
  std::vector<BitsRange> span_ranges(n_images * spans);
  at::parallel_for(0, n_images * spans, 1, [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      const int64_t n = t / spans, begin = (t % spans) * span, end = std::min(pixels, begin + span);
      span_ranges[t] = channel_max_span(channel_max_row, src + n * geo.image_stride, geo, begin, end,
                                        maps + n * pixels);
    }
  });
  if (kInPlace && mode == Mode::None) return;  // the raw channel max is the result
  std::vector<Affine> affines(n_images);
  for (int64_t n = 0; n < n_images; ++n) {
    BitsRange r;
    for (int64_t s = 0; s < spans; ++s) r.merge(span_ranges[n * spans + s]);
    affines[n] = make_affine(r.lo, r.hi, mode, eps);
  }
  at::parallel_for(0, n_images * spans, 1, [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      const int64_t n = t / spans, begin = (t % spans) * span, end = std::min(pixels, begin + span);
      normalize(maps + n * pixels, n, begin, end, affines[n]);
    }
  });
}

template <class Out>
at::Tensor abs_channel_max_normalize_impl(const at::Tensor& grad, std::string_view mode_name, double eps,
                                          OutKind kind, at::ScalarType out_dtype) {
  check_input(grad, kind);
  const Mode mode = parse_mode(mode_name, kind);
  at::Tensor out = at::empty({grad.size(0), grad.size(2), grad.size(3)}, grad.options().dtype(out_dtype));
  if (out.numel() == 0) return out;
  dispatch_float_types(grad.scalar_type(), [&](auto tag) { run<decltype(tag), Out>(grad, mode, eps, out); });
  return out;
}

at::Tensor abs_channel_max_normalize_cpu(const at::Tensor& grad, c10::string_view mode, double eps) {
  return abs_channel_max_normalize_impl<FloatOut>(grad, mode, eps, OutKind::Float, at::kFloat);
}

at::Tensor abs_channel_max_normalize_u8_cpu(const at::Tensor& grad, c10::string_view mode, double eps) {
  return abs_channel_max_normalize_impl<U8Out>(grad, mode, eps, OutKind::U8, at::kByte);
}

}  // namespace

TORCH_LIBRARY_IMPL(salrt, CPU, m) {
  m.impl("abs_channel_max_normalize", &abs_channel_max_normalize_cpu);
  m.impl("abs_channel_max_normalize_u8", &abs_channel_max_normalize_u8_cpu);
}

}  // namespace salrt::cpu
