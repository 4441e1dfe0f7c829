// edgekit HLS: norms, per-token absmax int8 quantization and dequantization (BitNet b1.58 W1.58A8).
// Each matches edgekit/model/reference.py step for step, with sums taken in index order (the numpy twin
// in hls/reference.py sums in the same order, so the two agree bit for bit).
#pragma once
#include "ek_stream.h"
#include "ek_types.h"

namespace ek {

#ifndef EK_EW_LANES
#define EK_EW_LANES 1  // element-wise lanes (ek_config.h); the unroll factor of the element-wise loops
#endif

// sum_i x_i^2 with EK_EW_LANES partial sums (element i into lane i % lanes, each in index order), added in
// lane order at the end: the unrolled loop has no carried float add, and the twin sums the same way.
template <int N>
float sum_squares(const float x[N]) {
    float part[EK_EW_LANES];
#pragma HLS ARRAY_PARTITION variable = part complete
    for (int p = 0; p < EK_EW_LANES; ++p) part[p] = 0.0f;
    for (int i = 0; i < N; ++i) {
#pragma HLS PIPELINE II = 1
#pragma HLS UNROLL factor = EK_EW_LANES
        part[i % EK_EW_LANES] += x[i] * x[i];
    }
    float s = part[0];
    for (int p = 1; p < EK_EW_LANES; ++p) s += part[p];
    return s;
}

// RMSNorm with a learned weight: x / sqrt(mean(x^2) + eps) * w.
template <int N>
void rms_norm(const float x[N], const float* weight, float eps, float y[N]) {
    const float d = std::sqrt(sum_squares<N>(x) / (float)N + eps);
    for (int i = 0; i < N; ++i) {
#pragma HLS UNROLL factor = EK_EW_LANES
        y[i] = x[i] / d * weight[i];
    }
}

// bitllama2.c's weightless BitLinear norm: x / (N * rms(x)), zeros stay zeros.
template <int N>
void bitlinear_norm(const float x[N], float y[N]) {
    const float rms = std::sqrt(sum_squares<N>(x) / (float)N);
    const float d = rms > 0.0f ? rms * (float)N : 1.0f;
    for (int i = 0; i < N; ++i) {
#pragma HLS UNROLL factor = EK_EW_LANES
        y[i] = x[i] / d;
    }
}

// q = round_half_away(x / (max|x| / 127)) in [-127, 127]; returns the scale max|x| / 127.
template <int N>
float quantize_absmax(const float x[N], act_t q[N]) {
    float amax = 0.0f;
    for (int i = 0; i < N; ++i) {
#pragma HLS UNROLL factor = EK_EW_LANES
        amax = std::fabs(x[i]) > amax ? std::fabs(x[i]) : amax;   // max is exact in any order
    }
    const float scale = amax / 127.0f;
    const float safe = scale > 0.0f ? scale : 1.0f;
    for (int i = 0; i < N; ++i) {
#pragma HLS PIPELINE II = 1
#pragma HLS UNROLL factor = EK_EW_LANES
        const float v = x[i] / safe;
        const float r = std::floor(std::fabs(v) + 0.5f);
        q[i] = (int)(v < 0.0f ? -r : r);
    }
    return scale;
}

// A BitLinear input: optional BitLinear norm, then absmax int8 (one token row).
template <int N, bool INPUT_NORM>
float quantize_input(const float x[N], act_t q[N]) {
    if (!INPUT_NORM) return quantize_absmax<N>(x, q);
    float xn[N];
    bitlinear_norm<N>(x, xn);
    return quantize_absmax<N>(xn, q);
}

// y = float(acc) * a_scale * w_scale, in the reference's order ((q @ W^T) * a_s) * s.
template <int N>
void dequantize(const acc_t acc[N], float a_scale, float w_scale, float y[N]) {
    for (int i = 0; i < N; ++i) {
#pragma HLS PIPELINE II = 1
        y[i] = (float)(int)acc[i] * a_scale * w_scale;
    }
}

// The streamed form: accumulators arrive row by row, tokens inner (ek_tlmm.h tlmm_stream).
template <int OUT, int TT, int DEPTH>
void dequantize_stream(stream<acc_t, DEPTH>& accs, int n_tok, const float a_scale[TT], float w_scale,
                       float y[TT][OUT]) {
    for (int row = 0; row < OUT; ++row)
        for (int t = 0; t < n_tok; ++t) {
#pragma HLS PIPELINE II = 1
            y[t][row] = (float)(int)accs.read() * a_scale[t] * w_scale;
        }
}

}  // namespace ek
