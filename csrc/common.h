// Input validation, argument parsing and stride geometry shared by the CPU and CUDA implementations.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <string_view>

#include "normalize.h"

namespace salrt {

enum class OutKind { Float, U8 };

inline const char* op_name(OutKind out) {
  return out == OutKind::Float ? "salrt::abs_channel_max_normalize" : "salrt::abs_channel_max_normalize_u8";
}

inline void check_input(const at::Tensor& grad, OutKind out) {
  const auto dtype = grad.scalar_type();
  const bool float_dtype = dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16;
  TORCH_CHECK(grad.dim() == 4 && float_dtype, op_name(out),
              " expects a 4-D [N,C,H,W] float32/float16/bfloat16 tensor, got a ", grad.dim(), "-D ", dtype,
              " tensor of shape ", grad.sizes());
  TORCH_CHECK(grad.size(1) >= 1, op_name(out), " expects at least one channel (C >= 1), got shape ",
              grad.sizes());
}

inline Mode parse_mode(std::string_view mode, OutKind out) {
  if (mode == "minmax") return Mode::MinMax;
  if (mode == "max") return Mode::Max;
  if (mode == "none") {
    TORCH_CHECK(out == OutKind::Float, op_name(out),
                ": mode 'none' is not allowed for uint8 output (unnormalised values do not fit in [0, 255])");
    return Mode::None;
  }
  TORCH_CHECK(false, op_name(out), ": unknown mode '", mode, "', expected 'minmax', 'max' or 'none'");
}

// An image as a grid of `rows` x `cols` pixels. H and W are folded into a single row whenever the
// strides allow it (contiguous NCHW and NHWC, W == 1), so the kernels see long unit- or C-strided rows.
struct Geometry {
  int64_t images, channels, rows, cols;
  int64_t image_stride, channel_stride, row_stride, col_stride;
  int64_t pixels() const { return rows * cols; }
};

inline Geometry make_geometry(const at::Tensor& g) {
  Geometry geo{g.size(0), g.size(1), g.size(2), g.size(3), g.stride(0), g.stride(1), g.stride(2), g.stride(3)};
  if (geo.cols == 1) {  // a column: walk it as one row along H
    geo.cols = geo.rows;
    geo.col_stride = geo.row_stride;
    geo.rows = 1;
  } else if (geo.rows == 1 || geo.row_stride == geo.cols * geo.col_stride) {
    geo.cols *= geo.rows;
    geo.rows = 1;
  }
  if (geo.rows == 1) geo.row_stride = 0;
  if (geo.channels == 1) geo.channel_stride = 0;
  return geo;
}

// Calls f(T{}) with T the C++ type of `dtype` (float, c10::Half or c10::BFloat16); check_input ran first.
template <class F>
void dispatch_float_types(at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat: return f(float{});
    case at::kHalf: return f(c10::Half{});
    case at::kBFloat16: return f(c10::BFloat16{});
    default: TORCH_CHECK(false, "salrt: unsupported dtype ", dtype);
  }
}

}  // namespace salrt
