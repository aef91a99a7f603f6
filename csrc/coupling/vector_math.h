// exp, expm1, tanh, atan and log1p on explicit SIMD vectors, for the coupling kernel's CPU loops.
//
// Why not std::exp / std::tanh: glibc's scalar functions stop loops from vectorising, and its
// vector variants (libmvec) are declared only under -ffast-math, which breaks the NaN/inf
// semantics the kernels keep. Why explicit vectors: GCC does not if-convert the clamps of a range
// reduction inside `#pragma omp simd` loops (it splits the paths and gives up on "control flow in
// loop"), so the functions are templates over the lane type V: a scalar T, or a GCC vector of
// 32 or 64 bytes of T (Pack<T, kBytes>: one AVX2 or AVX-512 register, two SSE ones). Selects
// are `mask ? a : b` on whole vectors, no branches; bit patterns are reinterpreted with vector
// casts. The same code on a scalar gives the same bits as on each vector lane (IEEE + - * /; no
// FMA, as the core builds with -ffp-contract=off, except in the AVX-512 loops, which contract every
// a * b + c in lanes and scalars alike), so loop tails are computed by the scalar instantiation.
//
// Accuracy: max error in ulps of the correctly rounded value, measured over every 977th float32
// bit pattern (4.4M values, numpy float64 reference) and 13k float64 values (mpmath, 40 digits);
// tests/test_coupling.py keeps checking them through the coupling op. NaN in -> NaN out;
// infinities, overflow and gradual underflow follow C99 Annex F.
//                 float32   float64
//   exp            0.92      0.90
//   expm1          1.45      1.82
//   tanh           2.47      2.39     (-v / (v + 2), v = expm1(-2|x|))
//   sech^2         4.37      3.80     (1 - tanh^2 computed as 4 w / (v + 2)^2, w = exp(-2|x|))
//   atan           1.82      1.55
//   log1p, [0, 1]  1.21      1.13
// (Without FMA. The AVX-512 loops' fused multiply-adds moved the float32 figures by at most a few
// hundredths, exp to 0.98; the tests check their bounds on whichever loops the CPU runs.)
// Coefficients: least-squares fits on 400 Chebyshev nodes in 40-digit arithmetic (mpmath), of
//   P(r) = (expm1(r) - r) / r^2 on [-ln2/2, ln2/2]                 (degree 5 / 10, Estrin's scheme)
//   Q(w) = (atan(z) - z) / z^3,  w = z^2, z in [0, tan(pi/8)]       (degree 4 / 10)
//   L(w) = (2 atanh(s) - 2 s) / s^3, w = s^2, s in [0, 3 - 2 sqrt2] (degree 2 / 6)
// Host code only: the CUDA kernels use CUDA's own math library (see coupling_kernel.h).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/host_device.h"

// Every function here is force-inlined into its loop and takes vectors by reference; no 32-byte
// vector crosses a call boundary, so the baseline clone's ABI note about AVX vector returns does
// not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace pyinv {
namespace vmath {

template <typename T>
struct Traits;

template <>
struct Traits<float> {
  using Bits = int32_t;
  static constexpr int kMantissaBits = 23;
  static constexpr float kBias = 127.0f;
  static constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: x + magic - magic rounds to an integer
  static constexpr float kLog2e = 1.44269502162933349609375f;
  static constexpr float kLn2Hi = 0.693359375f;  // 9 significant bits: k * kLn2Hi is exact for |k| < 2^15
  static constexpr float kLn2Lo = -2.12194440e-4f;
  static constexpr float kExpMin = -104.0f;  // exp below rounds to 0
  static constexpr float kExpMax = 89.0f;    // exp above overflows
  static constexpr float kPio2Hi = 1.57079637050628662109375f;
  static constexpr float kPio2Lo = -4.37113900018624283e-8f;
  static constexpr float kPio4Hi = 0.785398185253143310546875f;
  static constexpr float kPio4Lo = -2.18556950009312141e-8f;
};

template <>
struct Traits<double> {
  using Bits = int64_t;
  static constexpr int kMantissaBits = 52;
  static constexpr double kBias = 1023.0;
  static constexpr double kRoundMagic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kLog2e = 1.4426950408889634;
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;  // 32 significant bits
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
  static constexpr double kExpMin = -746.0;
  static constexpr double kExpMax = 710.0;
  static constexpr double kPio2Hi = 1.5707963267948966;
  static constexpr double kPio2Lo = 6.123233995736766e-17;
  static constexpr double kPio4Hi = 0.7853981633974483;
  static constexpr double kPio4Lo = 3.061616997868383e-17;
};

// kBytes bytes of T as one GCC vector: 32 (8 floats or 4 doubles: one AVX2 register, two SSE ones)
// or 64 (one AVX-512 register; only for loops compiled for AVX-512: on AVX2, two registers per
// operation measured 1.5-6x slower, GCC lowers them poorly).
template <typename T, int kBytes>
struct Pack {
  typedef T type __attribute__((vector_size(kBytes)));
  static constexpr int kLanes = static_cast<int>(kBytes / sizeof(T));
};

// Bit reinterpretation for a lane type V (a GCC vector of T, or T itself), as unsigned integers:
// shifting a bit pattern left may overflow a signed one, undefined behaviour before C++20 (UBSan
// stops there).
template <typename T, typename V>
struct Lanes {
  typedef std::make_unsigned_t<typename Traits<T>::Bits> Bits __attribute__((vector_size(sizeof(V))));
  static PYINV_ALWAYS_INLINE Bits to_bits(const V& x) { return (Bits)x; }  // a vector cast reinterprets the bits
  static PYINV_ALWAYS_INLINE V from_bits(const Bits& b) { return (V)b; }
};

template <typename T>
struct Lanes<T, T> {
  using Bits = std::make_unsigned_t<typename Traits<T>::Bits>;
  static PYINV_ALWAYS_INLINE Bits to_bits(T x) {
    Bits b;
    std::memcpy(&b, &x, sizeof(T));
    return b;
  }
  static PYINV_ALWAYS_INLINE T from_bits(Bits b) {
    T x;
    std::memcpy(&x, &b, sizeof(T));
    return x;
  }
};

// A constant in every lane.
template <typename V, typename T>
PYINV_ALWAYS_INLINE V splat(T c) {
  return V{} + c;
}

// Nearest integer (ties to even) of |x| < 2^(mantissa bits - 1), without a rounding instruction
// (SSE2 has none): adding 1.5 * 2^m pushes the fraction out of the mantissa.
template <typename T, typename V>
PYINV_ALWAYS_INLINE V round_to_integer(const V& x) {
  return (x + Traits<T>::kRoundMagic) - Traits<T>::kRoundMagic;
}

// 2^k for an integer-valued k with 1 <= k + bias <= 2 bias (a normal number): the biased exponent
// is written straight into the exponent field. The low bits of (k + bias + magic) are k + bias, so
// no float-to-int conversion is needed (AVX2 has none for 64-bit integers).
template <typename T, typename V>
PYINV_ALWAYS_INLINE V pow2_integer(const V& k) {
  const V biased = k + (Traits<T>::kBias + Traits<T>::kRoundMagic);
  return Lanes<T, V>::from_bits(Lanes<T, V>::to_bits(biased) << Traits<T>::kMantissaBits);
}

// NaN-preserving clamp (a comparison with NaN is false, so NaN falls through unchanged).
template <typename T, typename V>
PYINV_ALWAYS_INLINE V clamp_keep_nan(const V& x, T lo, T hi) {
  const V lo_v = splat<V>(lo), hi_v = splat<V>(hi);
  const V raised = x < lo_v ? lo_v : x;
  return raised > hi_v ? hi_v : raised;
}

template <typename T>
constexpr typename Traits<T>::Bits sign_mask() {
  using Bits = typename Traits<T>::Bits;
  return static_cast<Bits>(static_cast<typename std::make_unsigned<Bits>::type>(1) << (sizeof(T) * 8 - 1));
}

template <typename T, typename V>
PYINV_ALWAYS_INLINE V abs_value(const V& x) {  // clears the sign bit: |-0| = +0, NaN stays NaN
  return Lanes<T, V>::from_bits(Lanes<T, V>::to_bits(x) & ~sign_mask<T>());
}

template <typename T, typename V>
PYINV_ALWAYS_INLINE V copy_sign(const V& magnitude, const V& sign) {
  using L = Lanes<T, V>;
  return L::from_bits((L::to_bits(magnitude) & ~sign_mask<T>()) | (L::to_bits(sign) & sign_mask<T>()));
}

// expm1 of the reduced argument |r| <= ln2/2 (a little more is fine): r + r^2 P(r).
template <typename T, typename V>
PYINV_ALWAYS_INLINE V expm1_reduced(const V& r) {
  V p;
  if constexpr (sizeof(T) == 4) {
    // Estrin's scheme: three independent pairs, then two levels (a shorter dependency chain
    // than Horner's, which is what bounds these loops).
    const V r2 = r * r;
    const V p01 = 0.5f + r * 0.1666666716337204f;
    const V p23 = 0.04166646674275398f + r * 0.0083332983776927f;
    const V p45 = 0.0013933643931522965f + r * 0.00019899275503121316f;
    p = p01 + r2 * (p23 + r2 * p45);
  } else {
    const V r2 = r * r;
    const V r4 = r2 * r2;
    const V p01 = 0.5 + r * 0.1666666666666667;
    const V p23 = 0.04166666666666668 + r * 0.008333333333326141;
    const V p45 = 0.0013888888888879082 + r * 0.00019841269874802173;
    const V p67 = 2.4801587336422683e-05 + r * 2.755725542387984e-06;
    const V p89 = 2.755726330017862e-07 + r * 2.510520706464424e-08;
    const V p10 = splat<V>(2.091812988660952e-09);
    p = (p01 + r2 * p23) + r4 * ((p45 + r2 * p67) + r4 * (p89 + r2 * p10));
  }
  return r + (r * r) * p;
}

template <typename V>
struct ExpPair {
  V exp;    // e^x
  V expm1;  // e^x - 1, accurate near x = 0
};

// e^x and e^x - 1 from one range reduction x = k ln2 + r.
template <typename T, typename V>
PYINV_ALWAYS_INLINE ExpPair<V> exp_and_expm1(const V& x) {
  using Tr = Traits<T>;
  const V xc = clamp_keep_nan<T>(x, Tr::kExpMin, Tr::kExpMax);
  const V k = round_to_integer<T>(xc * Tr::kLog2e);
  const V r = (xc - k * Tr::kLn2Hi) - k * Tr::kLn2Lo;
  const V p = expm1_reduced<T>(r);  // e^r - 1
  // 2^k as 2^k1 * 2^k2 with k1 = floor(k / 2): both factors are normal numbers over the whole
  // range, and the last product rounds once, so subnormal results are correctly rounded.
  const V k1 = round_to_integer<T>(k * T(0.5) - T(0.25));
  const V k2 = k - k1;
  const V scale1 = pow2_integer<T>(k1), scale2 = pow2_integer<T>(k2);
  ExpPair<V> result;
  result.exp = ((T(1) + p) * scale1) * scale2;
  // e^x - 1 = 2^k p + (2^k - 1): both terms exact for moderate k, one rounding in the sum.
  const V scale = scale1 * scale2;
  const V expm1 = p * scale + (scale - T(1));
  result.expm1 = xc > splat<V>(Tr::kExpMax - T(1)) ? result.exp : expm1;  // inf stays inf
  return result;
}

template <typename T, typename V>
PYINV_ALWAYS_INLINE V exp(const V& x) {
  return exp_and_expm1<T>(x).exp;
}

// Largest |x| for exp_bounded: e^x is a normal number, and 2^k one factor.
template <typename T>
constexpr T kExpBoundedLimit = sizeof(T) == 4 ? T(87.0) : T(708.0);

// e^x for |x| <= kExpBoundedLimit<T> or NaN (the log-scales of the clamped couplings): the full
// exp without the clamp and the split scaling, about a third fewer operations.
template <typename T, typename V>
PYINV_ALWAYS_INLINE V exp_bounded(const V& x) {
  using Tr = Traits<T>;
  const V k = round_to_integer<T>(x * Tr::kLog2e);
  const V r = (x - k * Tr::kLn2Hi) - k * Tr::kLn2Lo;
  return (T(1) + expm1_reduced<T>(r)) * pow2_integer<T>(k);
}

// e^x - 1 for x <= 0 (or NaN): below -20 (float) / -40 (double) the result rounds to -1, so the
// argument is clamped there and 2^k needs no split.
template <typename T, typename V>
PYINV_ALWAYS_INLINE V expm1_nonpositive(const V& x) {
  using Tr = Traits<T>;
  const V low = splat<V>(sizeof(T) == 4 ? T(-20.0) : T(-40.0));
  const V xc = x < low ? low : x;
  const V k = round_to_integer<T>(xc * Tr::kLog2e);
  const V r = (xc - k * Tr::kLn2Hi) - k * Tr::kLn2Lo;
  const V scale = pow2_integer<T>(k);
  return expm1_reduced<T>(r) * scale + (scale - T(1));
}

template <typename V>
struct TanhSech2 {
  V tanh;
  V sech2;  // 1 - tanh^2, accurate where tanh is near +-1
};

// tanh(x) = -v / (v + 2) and sech^2(x) = 4 w / (v + 2)^2 with w = e^(-2|x|), v = w - 1.
// Both are accurate in relative terms everywhere, including tiny |x| (v = -2|x| exactly) and large
// |x| (w underflows to 0: tanh = 1, sech^2 = 0).
template <typename T, typename V>
PYINV_ALWAYS_INLINE TanhSech2<V> tanh_sech2(const V& x) {
  const V a = abs_value<T>(x);
  const ExpPair<V> e = exp_and_expm1<T>(T(-2) * a);
  const V denominator = e.expm1 + T(2);
  TanhSech2<V> result;
  result.tanh = copy_sign<T>(-e.expm1 / denominator, x);
  result.sech2 = (T(4) * e.exp) / (denominator * denominator);
  return result;
}

template <typename T, typename V>
PYINV_ALWAYS_INLINE V tanh(const V& x) {
  const V v = expm1_nonpositive<T>(T(-2) * abs_value<T>(x));
  return copy_sign<T>(-v / (v + T(2)), x);
}

template <typename T, typename V>
PYINV_ALWAYS_INLINE V atan_reduced_tail(const V& w) {  // Q(w)
  if constexpr (sizeof(T) == 4) {
    return -0.3333333134651184f + w * (0.1999955028295517f + w * (-0.1426423192024231f +
           w * (0.10746298730373383f + w * -0.06459376215934753f)));
  } else {
    return -0.3333333333333333 + w * (0.19999999999995652 + w * (-0.1428571428469138 +
           w * (0.11111111017100327 + w * (-0.0909090464769568 + w * (0.07692184699371778 +
           w * (-0.06664531369805009 + w * (0.05858311810501153 + w * (-0.05086254885823143 +
           w * (0.039253696320618564 + w * -0.01920252926841228)))))))));
  }
}

// atan(x): |x| > tan(3 pi/8) -> pi/2 + atan(-1/|x|); |x| > tan(pi/8) -> pi/4 + atan((|x|-1)/(|x|+1));
// then z + z^3 Q(z^2) on |z| <= tan(pi/8). One division per element, all branches selected.
template <typename T, typename V>
PYINV_ALWAYS_INLINE V atan(const V& x) {
  using Tr = Traits<T>;
  const V a = abs_value<T>(x);
  const auto big = a > splat<V>(T(2.414213562373095048801688724));
  const auto mid = a > splat<V>(T(0.4142135623730950488016887242));
  const V numerator = big ? splat<V>(T(-1)) : (mid ? a - T(1) : a);
  const V denominator = big ? a : (mid ? a + T(1) : splat<V>(T(1)));
  const V z = numerator / denominator;
  const V base_hi = big ? splat<V>(Tr::kPio2Hi) : (mid ? splat<V>(Tr::kPio4Hi) : splat<V>(T(0)));
  const V base_lo = big ? splat<V>(Tr::kPio2Lo) : (mid ? splat<V>(Tr::kPio4Lo) : splat<V>(T(0)));
  const V w = z * z;
  const V tail = (z * w) * atan_reduced_tail<T>(w);
  return copy_sign<T>(base_hi + (z + (tail + base_lo)), x);
}

template <typename T, typename V>
PYINV_ALWAYS_INLINE V log_reduced_tail(const V& w) {  // L(w)
  if constexpr (sizeof(T) == 4) {
    return 0.6666668653488159f + w * (0.3998875021934509f + w * 0.2958099842071533f);
  } else {
    return 0.666666666666667 + w * (0.39999999999899005 + w * (0.28571428626173057 + w * (0.2222221110612709 +
           w * (0.1818289100504977 + w * (0.15331664799306263 + w * 0.14617093237558204)))));
  }
}

// log(1 + w) for w in [0, 1] (NaN propagates): m = 1 + w rounded, c = w - (m - 1) its exact error;
// log(m) = k ln2 + log(1 + f) with 1 + f in [sqrt(1/2), sqrt(2)], log(1 + f) = 2 atanh(s) =
// 2 s + s r(s^2), s = f / (2 + f); the rounding of m is added back as c / (1 + f).
template <typename T, typename V>
PYINV_ALWAYS_INLINE V log1p_unit(const V& w) {
  using Tr = Traits<T>;
  const V m = T(1) + w;
  const V c = w - (m - T(1));
  const auto big = m > splat<V>(T(1.414213562373095048801688724));
  const V one_plus_f = big ? m * T(0.5) : m;
  const V f = one_plus_f - T(1);
  const V correction = (big ? c * T(0.5) : c) / one_plus_f;
  const V s = f / (T(2) + f);
  const V s2 = s * s;
  const V r = s2 * log_reduced_tail<T>(s2);
  // log(1 + f) = 2 s + s r = f - s (f - r) (as 2 s = f - s f): f is exact and the correction is
  // O(f^2), so the result rounds about once.
  const V log_one_plus_f = f - s * (f - r);
  const V k = big ? splat<V>(T(1)) : splat<V>(T(0));
  return k * Tr::kLn2Hi + (log_one_plus_f + (correction + k * Tr::kLn2Lo));
}

}  // namespace vmath
}  // namespace pyinv

#pragma GCC diagnostic pop
