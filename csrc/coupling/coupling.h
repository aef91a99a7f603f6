// Fused affine coupling (RealNVP / Glow): the kernels behind pyinverse.ops.coupling.
//
// Operands are (B, N) row sets: B samples of N elements each; element (b, i) of an operand lives
// at data[b * row_stride + i] (row_stride in elements, any value; the N elements of a row are
// contiguous). Channel slices of a contiguous (B, C, H, W) tensor, such as the two halves of a
// subnet's output, are such row sets without a copy. Outputs are written through the same
// description; logdet is a contiguous (B,) array. All operands share one dtype.
//
// Log-scale s = s(h) for the subnet output h (`clamp` c > 0, finite):
//   Tanh     s = c tanh(h / c)                  (RealNVP's soft clamp; |s| < c, ds/dh = 1 - (s/c)^2)
//   Atan     s = c 0.636 atan(h / c)            (FrEIA GLOWCouplingBlock "ATAN"; |s| < 0.999 c)
//   Sigmoid  s = log sigmoid(h + 2)             (Glow: scale = sigmoid(h + 2) in (0, 1); c unused)
//   Exp      s = h                              (no clamp; c unused)
// Forward:  y = x exp(s) + t,       logdet[b] = + sum_i s[b, i]
// Inverse:  x = (y - t) exp(-s),    logdet[b] = - sum_i s[b, i]
// logdet is summed in float64 (per SIMD lane, then lanes and fixed chunks of a row in a fixed
// order), so it is deterministic: the same for any number of threads and on either ISA clone.
// IEEE semantics are kept: a NaN in x or t gives NaN in that output element only; a NaN in h
// gives NaN there and in its sample's logdet; h = +-inf gives s = +-c (tanh), +-0.999c (atan),
// 0 / -inf (sigmoid), +-inf (exp). Empty batches and empty rows are fine (logdet of an empty row
// is 0).
//
// Backward (vector-Jacobian products) for either direction, given the gradient g of the
// direction's output and gl of the logdet, computes any subset of grad_in, grad_h, grad_t. It
// needs h and one side of the coupling, `known`: the direction's input, or its output (then the
// input can be reconstructed in the same pass, bit-identical to running the other direction:
// this is what lets a reversible network drop stored activations).
//   forward:  grad_x = g e^s,   grad_t = g,          grad_h = (g x e^s + gl) ds/dh
//   inverse:  grad_y = g e^-s,  grad_t = -g e^-s,    grad_h = -(g x + gl) ds/dh
// t is read only when needed: forward from the output, inverse from the input, or to reconstruct.
//
// Saving forward + backward from saved (what autograd uses): the forward may also write, per
// element, the direction's multiplier m (e^s forward, e^-s inverse) and the slope ds/dh. A
// backward given them reads neither h nor t and evaluates no elementary function; it needs the
// unscaled side x as `known` (the forward's input, the inverse's output). Results are the same
// bits as the backward from h (the multiplier and slope are computed by the same code).
#pragma once
#include <cstdint>
#include <string>

#include "core/array_view.h"
#include "coupling/coupling_kernel.h"

namespace pyinv {

coupling::Scale parse_coupling_scale(const std::string& name, const char* op);

// (B, N) rows: element (b, i) at data[b * row_stride + i]. data may be null for an absent operand.
template <typename Pointer>
struct CouplingRows {
  Pointer data = nullptr;
  int64_t row_stride = 0;
};
using CouplingInput = CouplingRows<const void*>;
using CouplingOutput = CouplingRows<void*>;

struct CouplingProblem {
  DType dtype = DType::Float32;
  coupling::Scale scale = coupling::Scale::Tanh;
  double clamp = 2.0;
  int64_t batch = 0;     // B >= 0
  int64_t features = 0;  // N >= 0
  bool inverse = false;  // false: y = x e^s + t; true: x = (y - t) e^-s

  void validate(const char* op) const;  // throws ValueError naming what is wrong
};

// What a saving forward writes for the backward (both absent, or both present).
struct CouplingSaved {
  CouplingOutput multiplier;  // e^s (forward) or e^-s (inverse)
  CouplingOutput slope;       // ds/dh
  bool present() const { return multiplier.data != nullptr; }
};

// The coupling in the problem's direction: out = coupling(in; h, t), logdet (B,) (may be null),
// and optionally what the backward from saved needs.
void coupling_apply_cpu(const CouplingProblem& problem, CouplingInput in, CouplingInput h, CouplingInput t,
                        CouplingOutput out, void* logdet, const CouplingSaved& saved = {});

struct CouplingGradients {
  CouplingInput known;         // the direction's input, or its output when known_is_output
  bool known_is_output = false;
  CouplingInput h;
  CouplingInput t;             // may be null unless needed (see above)
  CouplingInput grad_out;      // gradient of the direction's output
  const void* grad_logdet = nullptr;  // (B,) contiguous, or null for zero
  CouplingOutput grad_in;      // each of these four may be null (not computed)
  CouplingOutput grad_h;
  CouplingOutput grad_t;
  CouplingOutput reconstructed;  // the direction's input; only with known_is_output
  CouplingInput saved_multiplier;  // from a saving forward: then h and t are not read
  CouplingInput saved_slope;

  bool from_saved() const { return saved_multiplier.data != nullptr; }

  bool needs_t(const CouplingProblem& problem) const {
    return reconstructed.data != nullptr || (known_is_output != problem.inverse);
  }
  void validate(const CouplingProblem& problem, const char* op) const;
};

void coupling_backward_cpu(const CouplingProblem& problem, const CouplingGradients& grads);

#if PYINV_WITH_CUDA
// Same contracts on device pointers, enqueued on `stream` (a cudaStream_t as an integer).
void coupling_apply_cuda(const CouplingProblem& problem, CouplingInput in, CouplingInput h, CouplingInput t,
                         CouplingOutput out, void* logdet, uintptr_t stream, const CouplingSaved& saved = {});
void coupling_backward_cuda(const CouplingProblem& problem, const CouplingGradients& grads, uintptr_t stream);
#endif

}  // namespace pyinv
