// edgekit HLS: float32 scalar math with a bit-exact numpy twin (hls/reference.py).
// Only IEEE-754 correctly rounded operations (+ - * / sqrt floor ldexp) are used, in a fixed order, so g++
// (-ffp-contract=off, no -ffast-math), Vitis HLS float cores and numpy float32 give the same bits.
// exp is our own: libm's expf and numpy's SIMD exp differ in the last bit.
#pragma once
#include <cmath>

namespace ek {

// Coefficients are float32 values written in hex so both sides read the exact same number.
constexpr float kLog2e = 0x1.715476p+0f;
constexpr float kExpClampLo = -87.0f;  // 2^(-87 log2 e) is still a normal float
constexpr float kExpClampHi = 88.0f;
// 2^f = sum_k (ln 2)^k / k! f^k on [0, 1), Taylor to degree 7 (relative error <= 1.3e-6 as f -> 1; the
// rounding of t adds ~5e-6 at |x| ~ 80).
constexpr float kExp2Poly[8] = {0x1p+0f,          0x1.62e43p-1f,    0x1.ebfbep-3f,   0x1.c6b08ep-5f,
                                0x1.3b2ab6p-7f,   0x1.5d87fep-10f,  0x1.430912p-13f, 0x1.ffcbfcp-17f};

// e^x = 2^n * 2^f with t = x log2 e, n = floor(t), f = t - n; Horner from the highest degree.
inline float exp_approx(float x) {
    if (x < kExpClampLo) x = kExpClampLo;
    if (x > kExpClampHi) x = kExpClampHi;
    float t = x * kLog2e;
    float n = std::floor(t);
    float f = t - n;
    float p = kExp2Poly[7];
    for (int k = 6; k >= 0; --k) {
#pragma HLS UNROLL
        p = p * f + kExp2Poly[k];
    }
    return std::ldexp(p, (int)n);
}

// SwiGLU's gate: silu(g) * u = g / (1 + e^-g) * u (edgekit/model/reference.py feed_forward).
inline float silu_gate(float gate, float up) { return gate / (1.0f + exp_approx(-gate)) * up; }

// BitNet's squared ReLU gate: max(g, 0)^2 * u.
inline float relu2_gate(float gate, float up) {
    float g = gate > 0.0f ? gate : 0.0f;
    return g * g * up;
}

}  // namespace ek
