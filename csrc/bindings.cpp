// Every Python binding of pyinverse._C, in one place. Kernels take raw pointers (as integers),
// element strides and dtype names from pyinverse/_backend.py, check what they can, and release
// the GIL while they run.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/array_view.h"
#include "core/cuda_runtime.h"
#include "core/errors.h"
#include "core/parallel.h"
#include "quantile/quantile.h"

namespace py = pybind11;
using namespace pyinv;

namespace {

template <typename T>
T* as_ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

py::dict build_info() {
  py::dict info;
  info["cuda"] = static_cast<bool>(PYINV_WITH_CUDA);
  info["cuda_architectures"] = std::string(PYINV_CUDA_ARCHS);
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#endif
#if defined(PYINV_NO_TARGET_CLONES)
  info["cpu_dispatch"] = std::string("none (native or sanitizer build)");
#elif defined(__x86_64__)
  info["cpu_dispatch"] = std::string(__builtin_cpu_supports("avx2") ? "avx2 (runtime)" : "baseline (runtime)");
#else
  info["cpu_dispatch"] = std::string("baseline");
#endif
#if defined(__SANITIZE_ADDRESS__)
  info["sanitizers"] = std::string("address,undefined");
#else
  info["sanitizers"] = std::string("none");
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyinverse native kernels (CPU, and CUDA when built with it)";
  py::register_exception<ValueError>(m, "KernelValueError", PyExc_ValueError);
  py::register_exception<TypeError>(m, "KernelTypeError", PyExc_TypeError);

  // --- configuration -----------------------------------------------------------------------------
  m.def("version", [] { return std::string(PYINVERSE_VERSION); });
  m.def("build_info", &build_info);
  m.def("built_with_cuda", [] { return static_cast<bool>(PYINV_WITH_CUDA); });
  m.def("cuda_device_count", &cuda_device_count);
  m.def("get_num_threads", &get_num_threads);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));

  // --- quantile family ---------------------------------------------------------------------------
  m.def(
      "quantile",
      [](const std::string& device, int device_index, uintptr_t data, const std::string& dtype, int64_t num_samples,
         int64_t sample_stride, std::vector<int64_t> batch_shape, std::vector<int64_t> batch_strides,
         std::vector<double> q, int method, bool omit_nan, uintptr_t quantiles_out, uintptr_t mean_out,
         uintptr_t std_out, int ddof, uintptr_t stream) {
        QuantileProblem problem;
        problem.dtype = parse_dtype(dtype, "quantile");
        problem.num_samples = num_samples;
        problem.sample_stride = sample_stride;
        problem.batch = BatchLayout{std::move(batch_shape), std::move(batch_strides)};
        problem.q = std::move(q);
        problem.method = parse_quantile_method(method);
        problem.omit_nan = omit_nan;
        problem.ddof = ddof;
        problem.validate();
        py::gil_scoped_release release;
        if (device == "cpu") {
          quantile_cpu(problem, as_ptr<const void>(data), as_ptr<void>(quantiles_out), as_ptr<void>(mean_out),
                       as_ptr<void>(std_out));
        } else if (device == "cuda") {
#if PYINV_WITH_CUDA
          cuda_set_device(device_index, "quantile");
          quantile_cuda(problem, as_ptr<const void>(data), as_ptr<void>(quantiles_out), as_ptr<void>(mean_out),
                        as_ptr<void>(std_out), stream);
#else
          (void)stream;
          (void)device_index;
          throw ValueError("quantile: input is on CUDA but pyinverse was built without CUDA");
#endif
        } else {
          throw ValueError("quantile: unknown device '" + device + "'");
        }
      },
      py::arg("device"), py::arg("device_index"), py::arg("data"), py::arg("dtype"), py::arg("num_samples"), py::arg("sample_stride"),
      py::arg("batch_shape"), py::arg("batch_strides"), py::arg("q"), py::arg("method"), py::arg("omit_nan"),
      py::arg("quantiles_out"), py::arg("mean_out"), py::arg("std_out"), py::arg("ddof"), py::arg("stream"),
      "Order statistics (and optionally mean/std) along the sample axis; see pyinverse.quantile.");
}
