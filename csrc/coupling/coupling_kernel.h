// The arithmetic of the affine coupling, shared by the CPU loops and the CUDA kernels.
//
// Every function is a template over the scalar type T (float, double) and the lane type V: on
// the host V is T or a 32- or 64-byte GCC vector of T (vmath::Pack, so that the CPU loops are
// explicit SIMD); on the device V is T. Only the elementary functions differ: the host uses
// csrc/coupling/vector_math.h (vectorisable, IEEE special values kept), the device uses CUDA's
// math library. The formulas, written once, are below; the contract is in coupling.h.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/host_device.h"

#if defined(__CUDACC__)
#define PYINV_COUPLING_FN __forceinline__ __host__ __device__
#else
#include "coupling/vector_math.h"
#define PYINV_COUPLING_FN PYINV_ALWAYS_INLINE
#endif

namespace pyinv {
namespace coupling {

// How the subnet's raw output h becomes the log-scale s (see coupling.h for the definitions).
enum class Scale : int { Tanh = 0, Atan = 1, Sigmoid = 2, Exp = 3 };

// FrEIA's constant for 2/pi in its ATAN soft clamp (kept as written there: max |s| = 0.999 c).
constexpr double kAtanGain = 0.636;
// Glow's sigmoid offset: scale = sigmoid(h + 2), so h = 0 gives scale 0.88.
constexpr double kSigmoidShift = 2.0;

#if !defined(__CUDACC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // all functions below are inlined; see vector_math.h
#endif

template <typename V, typename T>
PYINV_COUPLING_FN V splat(T c) {
  return V{} + c;
}

// --- elementary functions: the only platform-specific part ------------------------------------
template <typename V>
struct ExpAndExpm1 {
  V exp, expm1;
};

#if defined(__CUDACC__)
// CUDA's math library (float and double overloads; max errors in the CUDA programming guide).
template <typename T, bool kBounded = false, typename V>
PYINV_COUPLING_FN V elementary_exp(const V& x) {
  return exp(x);
}
template <typename T, typename V>
PYINV_COUPLING_FN V elementary_expm1_nonpositive(const V& x) {
  return expm1(x);
}
template <typename T, typename V>
PYINV_COUPLING_FN ExpAndExpm1<V> elementary_exp_expm1(const V& x) {
  return {exp(x), expm1(x)};
}
template <typename T, typename V>
PYINV_COUPLING_FN V elementary_atan(const V& x) {
  return atan(x);
}
template <typename T, typename V>
PYINV_COUPLING_FN V elementary_log1p_unit(const V& w) {
  return log1p(w);
}
template <typename T, typename V>
PYINV_COUPLING_FN V elementary_abs(const V& x) {
  return fabs(x);
}
template <typename T, typename V>
PYINV_COUPLING_FN V elementary_copysign(const V& magnitude, const V& sign) {
  return copysign(magnitude, sign);
}
#else
// kBounded: the caller knows |x| <= vmath::kExpBoundedLimit<T> (or NaN); same bits, fewer operations.
template <typename T, bool kBounded = false, typename V>
PYINV_ALWAYS_INLINE V elementary_exp(const V& x) {
  if constexpr (kBounded) {
    return vmath::exp_bounded<T>(x);
  } else {
    return vmath::exp<T>(x);
  }
}
// For x <= 0: bit-identical to elementary_exp_expm1(x).expm1, without the exp.
template <typename T, typename V>
PYINV_ALWAYS_INLINE V elementary_expm1_nonpositive(const V& x) {
  return vmath::expm1_nonpositive<T>(x);
}
template <typename T, typename V>
PYINV_ALWAYS_INLINE ExpAndExpm1<V> elementary_exp_expm1(const V& x) {
  const vmath::ExpPair<V> pair = vmath::exp_and_expm1<T>(x);
  return {pair.exp, pair.expm1};
}
template <typename T, typename V>
PYINV_ALWAYS_INLINE V elementary_atan(const V& x) {
  return vmath::atan<T>(x);
}
template <typename T, typename V>
PYINV_ALWAYS_INLINE V elementary_log1p_unit(const V& w) {
  return vmath::log1p_unit<T>(w);
}
template <typename T, typename V>
PYINV_ALWAYS_INLINE V elementary_abs(const V& x) {
  return vmath::abs_value<T>(x);
}
template <typename T, typename V>
PYINV_ALWAYS_INLINE V elementary_copysign(const V& magnitude, const V& sign) {
  return vmath::copy_sign<T>(magnitude, sign);
}
#endif

// --- the scale functions ----------------------------------------------------------------------
template <typename V>
struct LogScale {
  V s;   // log-scale: the output is scaled by exp(s)
  V ds;  // ds/dh (only when asked for)
};

// What the scale functions take besides h: the clamp c > 0 (finite), FrEIA's atan gain, and 1 / c
// when a product gives the bits of h / c.
template <typename T>
struct ScaleParameters {
  T clamp;
  T atan_gain;         // T(c * kAtanGain), rounded once as FrEIA's `clamp * 0.636 * atan(...)` does
  T clamp_reciprocal;  // 1 / c if c is a power of two (the default 2), else 0
};

// Host side (CPU loops and CUDA launchers). For c = 2^e, h * 2^-e and h / 2^e are the same
// correctly rounded number, subnormal results included; a division is the slowest instruction of
// the scale functions, and the first link of tanh's dependency chain.
template <typename T>
inline ScaleParameters<T> make_scale_parameters(double clamp) {
  int exponent = 0;
  const T c = static_cast<T>(clamp);
  const bool power_of_two = std::frexp(c, &exponent) == T(0.5);
  const T reciprocal = T(1) / c;
  return {c, static_cast<T>(clamp * kAtanGain),
          power_of_two && std::isnormal(reciprocal) ? reciprocal : T(0)};
}

template <typename T, typename V>
PYINV_COUPLING_FN V divide_by_clamp(const V& h, const ScaleParameters<T>& p) {
  return p.clamp_reciprocal != T(0) ? h * p.clamp_reciprocal : h / p.clamp;
}

// The tanh scale in two halves, so that the CPU loops can split its long dependency chain:
// u = h / c; w = e^(-2|u|), v = w - 1 (the exponentials), then tanh|u| = -v / (v + 2) and
// 1 - tanh^2 = 4 w / (v + 2)^2, accurate also where tanh is near +-1 (large |h|). v is the same
// bits with or without the slope, so forward, inverse and backward agree on s.
template <typename V>
struct TanhExponentials {
  V v;  // e^(-2|u|) - 1
  V w;  // e^(-2|u|) (only for the slope)
};

template <typename T, bool kSlope, typename V>
PYINV_COUPLING_FN TanhExponentials<V> tanh_exponentials(const V& h, const ScaleParameters<T>& p) {
  const V minus_2a = T(-2) * elementary_abs<T>(divide_by_clamp(h, p));
  TanhExponentials<V> out;
  if constexpr (kSlope) {
    const ExpAndExpm1<V> e = elementary_exp_expm1<T>(minus_2a);
    out.v = e.expm1;
    out.w = e.exp;
  } else {
    out.v = elementary_expm1_nonpositive<T>(minus_2a);
  }
  return out;
}

// s = c tanh(h / c) (the sign of h / c is that of h) and optionally ds/dh, from the exponentials.
template <typename T, bool kSlope, typename V>
PYINV_COUPLING_FN LogScale<V> tanh_log_scale(const V& h, const TanhExponentials<V>& e, T clamp) {
  LogScale<V> out;
  const V v_plus_2 = e.v + T(2);
  out.s = clamp * elementary_copysign<T>(-e.v / v_plus_2, h);
  if constexpr (kSlope) out.ds = (T(4) * e.w) / (v_plus_2 * v_plus_2);
  return out;
}

// s(h) and optionally ds/dh.
template <typename T, Scale kScale, bool kSlope, typename V>
PYINV_COUPLING_FN LogScale<V> log_scale(const V& h, const ScaleParameters<T>& p) {
  LogScale<V> out;
  if constexpr (kScale == Scale::Tanh) {
    out = tanh_log_scale<T, kSlope>(h, tanh_exponentials<T, kSlope>(h, p), p.clamp);
  } else if constexpr (kScale == Scale::Atan) {
    const V u = divide_by_clamp(h, p);
    out.s = p.atan_gain * elementary_atan<T>(u);
    if constexpr (kSlope) out.ds = T(kAtanGain) / (T(1) + u * u);  // u^2 = inf gives 0
  } else if constexpr (kScale == Scale::Sigmoid) {
    // s = log sigmoid(u), u = h + 2: min(u, 0) - log1p(e^(-|u|)), no overflow for any u.
    // ds/dh = sigmoid(-u) = w / (1 + w) for u >= 0 and 1 / (1 + w) for u < 0, w = e^(-|u|).
    const V u = h + T(kSigmoidShift);
    const V w = elementary_exp<T>(-elementary_abs<T>(u));
    const V zero = splat<V>(T(0));
    out.s = (u < zero ? u : zero) - elementary_log1p_unit<T>(w);
    if constexpr (kSlope) {
      const V inverse = T(1) / (T(1) + w);
      out.ds = u >= zero ? w * inverse : inverse;
    }
  } else {  // Scale::Exp: s = h
    out.s = h;
    if constexpr (kSlope) out.ds = splat<V>(T(1));
  }
  return out;
}

// --- one element of the coupling --------------------------------------------------------------
// Forward:  y = x exp(s) + t,       logdet = + sum s
// Inverse:  x = (y - t) exp(-s),    logdet = - sum s
// kBoundedExp: |s| <= vmath::kExpBoundedLimit<T> is known (tanh / atan with a moderate clamp);
// the results are the same bits either way.
template <typename T, bool kBoundedExp = false, typename V>
PYINV_COUPLING_FN V coupling_forward_value(const V& x, const V& s, const V& t) {
  return x * elementary_exp<T, kBoundedExp>(s) + t;
}

template <typename T, bool kBoundedExp = false, typename V>
PYINV_COUPLING_FN V coupling_inverse_value(const V& y, const V& s, const V& t) {
  return (y - t) * elementary_exp<T, kBoundedExp>(-s);
}

// Gradients of one element. `g` is the gradient of the direction's output, `gl` that of the
// sample's logdet. Outputs: grad_in (of the direction's input), grad_h, grad_t, and optionally
// the other side of the coupling (the direction's input recomputed from its output).
template <typename V>
struct ElementGrads {
  V grad_in, grad_h, grad_t, other;
};

// Forward direction. Known: the input x (then x e^s is computed) or the output y (then
// x e^s = y - t, and x = (y - t) e^(-s) is reconstructed exactly as the inverse op computes it).
//   grad_x = g e^s,  grad_t = g,  grad_h = (g x e^s + gl) ds/dh
template <typename T, bool kKnownIsOutput, bool kReconstruct, bool kBoundedExp = false, typename V>
PYINV_COUPLING_FN ElementGrads<V> coupling_forward_grads(const V& known, const V& t, const V& g, const V& gl, const LogScale<V>& ls) {
  ElementGrads<V> out;
  const V scale = elementary_exp<T, kBoundedExp>(ls.s);
  V x_scaled;
  if constexpr (kKnownIsOutput) {
    x_scaled = known - t;
    if constexpr (kReconstruct) out.other = coupling_inverse_value<T, kBoundedExp>(known, ls.s, t);
  } else {
    x_scaled = known * scale;
  }
  out.grad_in = g * scale;
  out.grad_h = (g * x_scaled + gl) * ls.ds;
  out.grad_t = g;
  return out;
}

// Inverse direction: x = (y - t) e^(-s), logdet = -sum s. Known: the input y (x is computed) or
// the output x (then y = x e^s + t is reconstructed exactly as the forward op computes it).
//   grad_y = g e^(-s),  grad_t = -g e^(-s),  grad_h = -(g x + gl) ds/dh
template <typename T, bool kKnownIsOutput, bool kReconstruct, bool kBoundedExp = false, typename V>
PYINV_COUPLING_FN ElementGrads<V> coupling_inverse_grads(const V& known, const V& t, const V& g, const V& gl, const LogScale<V>& ls) {
  ElementGrads<V> out;
  const V inverse_scale = elementary_exp<T, kBoundedExp>(-ls.s);
  V x;
  if constexpr (kKnownIsOutput) {
    x = known;
    if constexpr (kReconstruct) out.other = coupling_forward_value<T, kBoundedExp>(known, ls.s, t);
  } else {
    x = (known - t) * inverse_scale;
  }
  out.grad_in = g * inverse_scale;
  out.grad_h = -((g * x + gl) * ls.ds);
  out.grad_t = -out.grad_in;
  return out;
}

// The multiplier of the direction: e^s (forward) or e^-s (inverse); coupling_*_value above
// compute the same bits as x m + t and (y - t) m.
template <typename T, bool kInverse, bool kBoundedExp = false, typename V>
PYINV_COUPLING_FN V coupling_multiplier(const V& s) {
  return elementary_exp<T, kBoundedExp>(kInverse ? -s : s);
}

// Gradients from a saving forward's multiplier m and slope ds/dh; `x` is the unscaled side (the
// forward's input, the inverse's output). The arithmetic of coupling_forward_grads (known input)
// and coupling_inverse_grads (known output), so the same bits.
template <bool kInverse, typename V>
PYINV_COUPLING_FN ElementGrads<V> coupling_grads_saved(const V& x, const V& g, const V& gl, const V& multiplier,
                                                      const V& slope) {
  ElementGrads<V> out;
  out.grad_in = g * multiplier;
  if constexpr (kInverse) {
    out.grad_h = -((g * x + gl) * slope);
    out.grad_t = -out.grad_in;
  } else {
    out.grad_h = (g * (x * multiplier) + gl) * slope;
    out.grad_t = g;
  }
  return out;
}

#if !defined(__CUDACC__)
#pragma GCC diagnostic pop
#endif

}  // namespace coupling
}  // namespace pyinv
