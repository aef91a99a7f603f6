// A strided view of caller-owned memory: what the core sees of numpy / torch / cupy arrays.
// Strides are in elements (not bytes) and may be zero or negative.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/errors.h"
#include "core/strided_offset.h"

namespace pyinv {

enum class DType : int { Float32 = 0, Float64 = 1 };

inline DType parse_dtype(const std::string& name, const char* op) {
  if (name == "float32") return DType::Float32;
  if (name == "float64") return DType::Float64;
  throw TypeError(std::string(op) + ": expected float32 or float64 data, got " + name);
}

// The non-sample ("batch") axes of an input, outer to inner, after the caller merged what it could.
struct BatchLayout {
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  int64_t inner_size() const { return shape.empty() ? 1 : shape.back(); }
  int64_t inner_stride() const { return strides.empty() ? 1 : strides.back(); }
  // Offset (elements) of the first element of outer row `outer` (all axes but the innermost).
  int64_t outer_offset(int64_t outer) const {
    return strided_offset(shape.data(), strides.data(), static_cast<int>(shape.size()) - 1, outer);
  }
  void validate(const char* op) const {
    PYINV_CHECK(shape.size() == strides.size(), op, "shape and strides differ in length");
    PYINV_CHECK(shape.size() <= 32, op, "at most 32 batch axes are supported");
    for (int64_t s : shape) PYINV_CHECK(s >= 0, op, "negative extent in shape");
  }
};

}  // namespace pyinv
