// Every Python binding of pyinverse._C, in one place. Kernels take raw pointers (as integers),
// element strides and dtype names from pyinverse/_backend.py, check what they can, and release
// the GIL while they run.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "core/array_view.h"
#include "core/host_device.h"
#include "core/cuda_runtime.h"
#include "core/errors.h"
#include "core/parallel.h"
#include "quantile/quantile.h"
#include "sqrtm/sqrtm.h"
#include "knn/knn.h"
#include "coupling/coupling.h"

namespace py = pybind11;
using namespace pyinv;

namespace {

template <typename T>
T* as_ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// Ask Linux for transparent huge pages on the 2 MiB-aligned interior of a fresh, untouched buffer, as
// numpy does for its own arrays: the first write then faults once per 2 MiB instead of once per
// 4 KiB (a new 64 MiB torch tensor took 26 ms to fill, 7 ms with the advice). Advisory: where THP
// is off or the memory is not anonymous, madvise fails and nothing changes.
void advise_huge_pages(uintptr_t address, uint64_t nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t(1) << 21;
  const uintptr_t start = (address + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (address + nbytes) & ~(kHugePage - 1);
  if (end > start) (void)madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
#else
  (void)address;
  (void)nbytes;
#endif
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
#if PYINV_X86_AVX2_DISPATCH
  // The loops dispatched by hand (host_device.h): PYINVERSE_CPU_BASELINE=1 selects the portable ones.
  info["quantile_loops"] = std::string(pyinv::use_avx2_loops() ? "avx2" : "portable");
  // PYINVERSE_CPU_NO_AVX512=1 (or PYINVERSE_CPU_BASELINE=1) keeps the coupling on its 32-byte loops.
  info["coupling_loops"] = std::string(pyinv::use_avx512_loops() ? "avx512" : "32-byte vectors (cpu_dispatch)");
#else
  info["quantile_loops"] = std::string("portable");
  info["coupling_loops"] = std::string("32-byte vectors (cpu_dispatch)");
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
  m.def("advise_huge_pages", &advise_huge_pages, py::arg("address"), py::arg("nbytes"));

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
          const CudaDeviceGuard device_guard(device_index, "quantile");
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

  // --- sqrtm family ------------------------------------------------------------------------------
  m.def(
      "sqrtm_spd",
      [](const std::string& device, int device_index, uintptr_t data, const std::string& dtype, int64_t n,
         int64_t row_stride, int64_t col_stride, std::vector<int64_t> batch_shape, std::vector<int64_t> batch_strides,
         uintptr_t sqrt_out, uintptr_t inv_sqrt_out, uintptr_t eigenvalues_out, uintptr_t eigenvectors_out, double eps,
         bool pseudo_inverse, bool check, double symmetry_tol, const std::string& op, uintptr_t stream,
         const std::string& algorithm) {
        SqrtmProblem problem;
        problem.op = op;
        if (algorithm == "auto") {
          problem.algorithm = SqrtmAlgorithm::Auto;
        } else if (algorithm == "tridiagonal") {
          problem.algorithm = SqrtmAlgorithm::Tridiagonal;
        } else if (algorithm == "jacobi") {
          problem.algorithm = SqrtmAlgorithm::Jacobi;
        } else {
          throw ValueError(op + ": 'algorithm' must be 'auto', 'tridiagonal' or 'jacobi', got '" + algorithm + "'");
        }
        problem.dtype = parse_dtype(dtype, op.c_str());
        problem.n = n;
        problem.row_stride = row_stride;
        problem.col_stride = col_stride;
        problem.batch = BatchLayout{std::move(batch_shape), std::move(batch_strides)};
        problem.eps = eps;
        problem.pseudo_inverse = pseudo_inverse;
        problem.check = check;
        problem.symmetry_rtol = symmetry_tol;
        problem.validate();
        SqrtmOutputs out;
        out.sqrt_out = as_ptr<void>(sqrt_out);
        out.inv_sqrt_out = as_ptr<void>(inv_sqrt_out);
        out.eigenvalues_out = as_ptr<void>(eigenvalues_out);
        out.eigenvectors_out = as_ptr<void>(eigenvectors_out);
        py::gil_scoped_release release;
        if (device == "cpu") {
          sqrtm_cpu(problem, as_ptr<const void>(data), out);
        } else if (device == "cuda") {
#if PYINV_WITH_CUDA
          const CudaDeviceGuard device_guard(device_index, op.c_str());
          sqrtm_cuda(problem, as_ptr<const void>(data), out, stream);
#else
          (void)stream;
          (void)device_index;
          throw ValueError(op + ": input is on CUDA but pyinverse was built without CUDA");
#endif
        } else {
          throw ValueError(op + ": unknown device '" + device + "'");
        }
      },
      py::arg("device"), py::arg("device_index"), py::arg("data"), py::arg("dtype"), py::arg("n"),
      py::arg("row_stride"), py::arg("col_stride"), py::arg("batch_shape"), py::arg("batch_strides"),
      py::arg("sqrt_out"), py::arg("inv_sqrt_out"), py::arg("eigenvalues_out"), py::arg("eigenvectors_out"),
      py::arg("eps"), py::arg("pseudo_inverse"), py::arg("check"), py::arg("symmetry_tol"), py::arg("op"),
      py::arg("stream"), py::arg("algorithm") = "auto",
      "Batched square root / inverse square root / eigendecomposition of symmetric PSD matrices (n <= 64); "
      "see pyinverse.ops.sqrtm.");

  // --- knn family ---------------------------------------------------------------------------------
  m.def(
      "dci_add",
      [](const std::string& device, int device_index, const std::string& dtype, int64_t n_old, int64_t dim,
         int num_composite, int num_simple, uintptr_t directions, uintptr_t old_keys, uintptr_t old_ids,
         uintptr_t new_data, int64_t n_new, uintptr_t copy_to, uintptr_t out_keys, uintptr_t out_ids,
         uintptr_t stream) -> py::object {
        DciShape shape;
        shape.dtype = parse_dtype(dtype, "DCIIndex.add");
        shape.n = n_old;
        shape.dim = dim;
        shape.num_composite = num_composite;
        shape.num_simple = num_simple;
        shape.validate("DCIIndex.add");
        if (device == "cpu") {
          double largest_squared_norm;
          {
            py::gil_scoped_release release;
            largest_squared_norm = dci_add_cpu(shape, as_ptr<const void>(directions), as_ptr<const void>(old_keys),
                                               as_ptr<const int32_t>(old_ids), as_ptr<const void>(new_data), n_new,
                                               as_ptr<void>(copy_to), as_ptr<void>(out_keys), as_ptr<int32_t>(out_ids));
          }
          return py::float_(largest_squared_norm);
        }
        if (device != "cuda") throw ValueError("DCIIndex.add: unknown device '" + device + "'");
        if (copy_to != 0) throw ValueError("DCIIndex.add: copy_to is for CPU points only");
#if PYINV_WITH_CUDA
        {
          py::gil_scoped_release release;
          const CudaDeviceGuard device_guard(device_index, "DCIIndex.add");
          dci_add_cuda(shape, as_ptr<const void>(directions), as_ptr<const void>(old_keys),
                       as_ptr<const int32_t>(old_ids), as_ptr<const void>(new_data), n_new, as_ptr<void>(out_keys),
                       as_ptr<int32_t>(out_ids), stream);
        }
        return py::none();
#else
        (void)stream;
        (void)device_index;
        throw ValueError("DCIIndex.add: input is on CUDA but pyinverse was built without CUDA");
#endif
      },
      py::arg("device"), py::arg("device_index"), py::arg("dtype"), py::arg("n_old"), py::arg("dim"),
      py::arg("num_composite"), py::arg("num_simple"), py::arg("directions"), py::arg("old_keys"),
      py::arg("old_ids"), py::arg("new_data"), py::arg("n_new"), py::arg("copy_to"), py::arg("out_keys"),
      py::arg("out_ids"), py::arg("stream"),
      "Sorted projections of n_old + n_new points from those of n_old; on the CPU also copies the new points to "
      "copy_to (0: no copy) and returns their largest squared norm (float64; None on CUDA); see "
      "pyinverse.knn.DCIIndex.");
  m.def(
      "dci_search",
      [](const std::string& device, int device_index, const std::string& dtype, int64_t n, int64_t dim,
         int num_composite, int num_simple, uintptr_t data, uintptr_t directions, uintptr_t keys, uintptr_t ids,
         double data_norm_max, uintptr_t queries, int64_t num_queries, int64_t k, int64_t max_visits,
         int64_t max_candidates, uintptr_t out_distances, uintptr_t out_indices, uintptr_t stream) {
        const char* op = "DCIIndex.search";
        DciShape shape;
        shape.dtype = parse_dtype(dtype, op);
        shape.n = n;
        shape.dim = dim;
        shape.num_composite = num_composite;
        shape.num_simple = num_simple;
        DciIndexPointers index{as_ptr<const void>(data), as_ptr<const void>(directions), as_ptr<const void>(keys),
                               as_ptr<const int32_t>(ids), data_norm_max};
        DciQueryBudget budget{k, max_visits, max_candidates};
        validate_dci_search(shape, budget, num_queries, op);
        py::gil_scoped_release release;
        if (device == "cpu") {
          dci_search_cpu(shape, index, as_ptr<const void>(queries), num_queries, budget, as_ptr<void>(out_distances),
                         as_ptr<int64_t>(out_indices));
        } else if (device == "cuda") {
#if PYINV_WITH_CUDA
          const CudaDeviceGuard device_guard(device_index, op);
          dci_search_cuda(shape, index, as_ptr<const void>(queries), num_queries, budget, as_ptr<void>(out_distances),
                          as_ptr<int64_t>(out_indices), stream);
#else
          (void)stream;
          (void)device_index;
          throw ValueError("DCIIndex.search: input is on CUDA but pyinverse was built without CUDA");
#endif
        } else {
          throw ValueError("DCIIndex.search: unknown device '" + device + "'");
        }
      },
      py::arg("device"), py::arg("device_index"), py::arg("dtype"), py::arg("n"), py::arg("dim"),
      py::arg("num_composite"), py::arg("num_simple"), py::arg("data"), py::arg("directions"), py::arg("keys"),
      py::arg("ids"), py::arg("data_norm_max"), py::arg("queries"), py::arg("num_queries"), py::arg("k"),
      py::arg("max_visits"), py::arg("max_candidates"), py::arg("out_distances"), py::arg("out_indices"),
      py::arg("stream"), "Prioritized DCI k-nearest-neighbour search of a query batch; see pyinverse.knn.DCIIndex.");
  m.def(
      "batched_nearest",
      [](const std::string& device, int device_index, const std::string& dtype, uintptr_t candidates,
         uintptr_t targets, int64_t batch, int64_t num_candidates, int64_t dim, uintptr_t out_indices,
         uintptr_t out_distances, uintptr_t stream) {
        const char* op = "batched_nearest";
        const DType type = parse_dtype(dtype, op);
        validate_batched_nearest(batch, num_candidates, dim, op);
        py::gil_scoped_release release;
        if (device == "cpu") {
          batched_nearest_cpu(type, as_ptr<const void>(candidates), as_ptr<const void>(targets), batch,
                              num_candidates, dim, as_ptr<int64_t>(out_indices), as_ptr<void>(out_distances));
        } else if (device == "cuda") {
#if PYINV_WITH_CUDA
          const CudaDeviceGuard device_guard(device_index, op);
          batched_nearest_cuda(type, as_ptr<const void>(candidates), as_ptr<const void>(targets), batch,
                               num_candidates, dim, as_ptr<int64_t>(out_indices), as_ptr<void>(out_distances), stream);
#else
          (void)stream;
          (void)device_index;
          throw ValueError("batched_nearest: input is on CUDA but pyinverse was built without CUDA");
#endif
        } else {
          throw ValueError("batched_nearest: unknown device '" + device + "'");
        }
      },
      py::arg("device"), py::arg("device_index"), py::arg("dtype"), py::arg("candidates"), py::arg("targets"),
      py::arg("batch"), py::arg("num_candidates"), py::arg("dim"), py::arg("out_indices"), py::arg("out_distances"),
      py::arg("stream"), "Nearest of each target's own candidates, for a batch in one call; see pyinverse.knn.batched_nearest.");

  m.def(
      "knn_shortlist",
      [](const std::string& dtype, uintptr_t dots, uintptr_t norms, int64_t num_queries, int64_t n, int64_t take,
         uintptr_t out_values, uintptr_t out_indices) {
        const DType type = parse_dtype(dtype, "exact_knn (shortlist)");
        py::gil_scoped_release release;
        knn_shortlist_cpu(type, as_ptr<const void>(dots), as_ptr<const void>(norms), num_queries, n, take,
                          as_ptr<double>(out_values), as_ptr<int64_t>(out_indices));
      },
      py::arg("dtype"), py::arg("dots"), py::arg("norms"), py::arg("num_queries"), py::arg("n"), py::arg("take"),
      py::arg("out_values"), py::arg("out_indices"),
      "The take smallest norms[j] - 2 dots[i, j] of every row (CPU); see pyinverse.knn.exact_knn.");
  m.def(
      "knn_rerank",
      [](const std::string& dtype, uintptr_t x, int64_t n, uintptr_t queries, uintptr_t candidates,
         uintptr_t counts, int64_t num_queries, int64_t num_candidates, int64_t dim, uintptr_t out_distances) {
        const DType type = parse_dtype(dtype, "exact_knn (re-rank)");
        py::gil_scoped_release release;
        knn_rerank_cpu(type, as_ptr<const void>(x), n, as_ptr<const void>(queries), as_ptr<const int64_t>(candidates),
                       as_ptr<const int64_t>(counts), num_queries, num_candidates, dim, as_ptr<double>(out_distances));
      },
      py::arg("dtype"), py::arg("x"), py::arg("n"), py::arg("queries"), py::arg("candidates"), py::arg("counts"),
      py::arg("num_queries"), py::arg("num_candidates"), py::arg("dim"), py::arg("out_distances"),
      "float64 squared distances of each query's candidate rows (CPU); see pyinverse.knn.exact_knn.");

  // --- coupling family ---------------------------------------------------------------------------
  // Operands are (pointer, row_stride) pairs of (B, N) rows (see csrc/coupling/coupling.h);
  // a pointer of 0 is an absent operand.
  using CouplingOperand = std::pair<uintptr_t, int64_t>;
  m.def(
      "coupling_apply",
      [](const std::string& device, int device_index, const std::string& dtype, const std::string& scale,
         double clamp, bool inverse, int64_t batch, int64_t features, CouplingOperand in, CouplingOperand h,
         CouplingOperand t, CouplingOperand out, uintptr_t logdet, uintptr_t stream, CouplingOperand multiplier,
         CouplingOperand slope) {
        const char* op = inverse ? "affine_coupling_inverse" : "affine_coupling";
        CouplingProblem problem;
        problem.dtype = parse_dtype(dtype, op);
        problem.scale = parse_coupling_scale(scale, op);
        problem.clamp = clamp;
        problem.batch = batch;
        problem.features = features;
        problem.inverse = inverse;
        problem.validate(op);
        auto input = [](CouplingOperand o) { return CouplingInput{as_ptr<const void>(o.first), o.second}; };
        auto output = [](CouplingOperand o) { return CouplingOutput{as_ptr<void>(o.first), o.second}; };
        const CouplingSaved saved{output(multiplier), output(slope)};
        py::gil_scoped_release release;
        if (device == "cpu") {
          coupling_apply_cpu(problem, input(in), input(h), input(t), output(out), as_ptr<void>(logdet), saved);
        } else if (device == "cuda") {
#if PYINV_WITH_CUDA
          const CudaDeviceGuard device_guard(device_index, op);
          coupling_apply_cuda(problem, input(in), input(h), input(t), output(out), as_ptr<void>(logdet), stream,
                              saved);
#else
          (void)stream;
          (void)device_index;
          throw ValueError(std::string(op) + ": input is on CUDA but pyinverse was built without CUDA");
#endif
        } else {
          throw ValueError(std::string(op) + ": unknown device '" + device + "'");
        }
      },
      py::arg("device"), py::arg("device_index"), py::arg("dtype"), py::arg("scale"), py::arg("clamp"),
      py::arg("inverse"), py::arg("batch"), py::arg("features"), py::arg("input"), py::arg("h"), py::arg("t"),
      py::arg("out"), py::arg("logdet"), py::arg("stream"), py::arg("multiplier") = CouplingOperand{0, 0},
      py::arg("slope") = CouplingOperand{0, 0},
      "Fused affine coupling and per-sample logdet (optionally saving the multiplier and slope for the "
      "backward); see pyinverse.ops.coupling.");
  m.def(
      "coupling_backward",
      [](const std::string& device, int device_index, const std::string& dtype, const std::string& scale,
         double clamp, bool inverse, int64_t batch, int64_t features, CouplingOperand known, bool known_is_output,
         CouplingOperand h, CouplingOperand t, CouplingOperand grad_out, uintptr_t grad_logdet,
         CouplingOperand grad_in, CouplingOperand grad_h, CouplingOperand grad_t, CouplingOperand reconstructed,
         uintptr_t stream, CouplingOperand saved_multiplier, CouplingOperand saved_slope) {
        const char* op = "affine_coupling_vjp";
        CouplingProblem problem;
        problem.dtype = parse_dtype(dtype, op);
        problem.scale = parse_coupling_scale(scale, op);
        problem.clamp = clamp;
        problem.batch = batch;
        problem.features = features;
        problem.inverse = inverse;
        problem.validate(op);
        auto input = [](CouplingOperand o) { return CouplingInput{as_ptr<const void>(o.first), o.second}; };
        auto output = [](CouplingOperand o) { return CouplingOutput{as_ptr<void>(o.first), o.second}; };
        CouplingGradients grads;
        grads.known = input(known);
        grads.known_is_output = known_is_output;
        grads.h = input(h);
        grads.t = input(t);
        grads.grad_out = input(grad_out);
        grads.grad_logdet = as_ptr<const void>(grad_logdet);
        grads.grad_in = output(grad_in);
        grads.grad_h = output(grad_h);
        grads.grad_t = output(grad_t);
        grads.reconstructed = output(reconstructed);
        grads.saved_multiplier = input(saved_multiplier);
        grads.saved_slope = input(saved_slope);
        grads.validate(problem, op);
        py::gil_scoped_release release;
        if (device == "cpu") {
          coupling_backward_cpu(problem, grads);
        } else if (device == "cuda") {
#if PYINV_WITH_CUDA
          const CudaDeviceGuard device_guard(device_index, op);
          coupling_backward_cuda(problem, grads, stream);
#else
          (void)stream;
          (void)device_index;
          throw ValueError(std::string(op) + ": input is on CUDA but pyinverse was built without CUDA");
#endif
        } else {
          throw ValueError(std::string(op) + ": unknown device '" + device + "'");
        }
      },
      py::arg("device"), py::arg("device_index"), py::arg("dtype"), py::arg("scale"), py::arg("clamp"),
      py::arg("inverse"), py::arg("batch"), py::arg("features"), py::arg("known"), py::arg("known_is_output"),
      py::arg("h"), py::arg("t"), py::arg("grad_out"), py::arg("grad_logdet"), py::arg("grad_in"),
      py::arg("grad_h"), py::arg("grad_t"), py::arg("reconstructed"), py::arg("stream"),
      py::arg("saved_multiplier") = CouplingOperand{0, 0}, py::arg("saved_slope") = CouplingOperand{0, 0},
      "Vector-Jacobian product of the affine coupling (optionally reconstructing its input); see "
      "pyinverse.ops.coupling.affine_coupling_vjp.");
}
