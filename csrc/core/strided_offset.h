// Offset (in elements) of the linear C-order index `index` over axes (shape, strides): the walk
// every kernel uses to reach the caller's strided data, on the host and on the device.
#pragma once
#include <cstdint>

#include "core/host_device.h"

namespace pyinv {

PYINV_HOST_DEVICE int64_t strided_offset(const int64_t* shape, const int64_t* strides, int ndim, int64_t index) {
  int64_t offset = 0;
  for (int axis = ndim - 1; axis >= 0; --axis) {
    offset += (index % shape[axis]) * strides[axis];
    index /= shape[axis];
  }
  return offset;
}

}  // namespace pyinv
