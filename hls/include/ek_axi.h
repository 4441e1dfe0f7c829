// edgekit HLS: the wide DDR path. The ternary weights, the LM head and the KV cache each reach DDR through
// kAxiPorts = 4 AXI4 masters of kPortBits = 128 bits (bundles gmem0..gmem3 of ek_top.cpp, one per
// high-performance PS port: S_AXI_HP0..HP3_FPD on Zynq UltraScale+, whose data width is 128 bits), so one
// pipelined load iteration moves a line of 4 x 128 bits = 64 bytes = 8 words: 16 GB/s at 250 MHz, above the
// 80% of KV260's 19.2 GB/s DDR peak the cycle model takes (fpga/estimate.py derives its bandwidth from these
// same constants, hls/ip.py AXI_PORTS / AXI_PORT_BITS; tests/fpga/test_estimate.py holds them together).
//
// Striping: a buffer's logical bytes are cut into 16-byte beats; beat b is beat b / 4 of port b % 4, so
// line l (bytes 64 l .. 64 l + 63) is beat l of every port: four parallel bursts, one beat of each a cycle.
// The host lays each striped buffer out as four equal regions (hls/packing.py stripe_ports) and writes the
// regions' addresses into the four pointer registers (weights, weights_1, weights_2, weights_3, ...).
// Weights, head and KV never stream at the same time (attention runs between matrices), so they share the
// four bundles.
#pragma once
#include <cstring>

#include "ek_types.h"

namespace ek {

constexpr int kAxiPorts = 4, kPortBits = 128;
constexpr int kBeatBytes = kPortBits / 8, kLineBytes = kAxiPorts * kBeatBytes, kLineWords = kLineBytes / 8;
typedef ap_uint<kPortBits> beat_t;
static_assert(sizeof(beat_t) == kBeatBytes, "ap_uint<128> must be 16 bytes (the host passes byte regions)");

// One AXI line: beat p from port p.
struct Line {
    beat_t beat[kAxiPorts];
    // Byte k of the line .. k + BYTES - 1 as an unsigned integer (never straddles a beat: BYTES divides 16).
    template <int BYTES>
    ap_uint<8 * BYTES> bytes_at(int k) const {
        const int lo = 8 * (k % kBeatBytes);
        return beat[k / kBeatBytes].range(lo + 8 * BYTES - 1, lo);
    }
};

// A striped buffer seen through its four ports, from byte `base` on (a view: `at` moves it).
struct Ports {
    beat_t* p0;
    beat_t* p1;
    beat_t* p2;
    beat_t* p3;
    long base;

    Ports at(long bytes) const {
        Ports view = *this;
        view.base += bytes;
        return view;
    }
    beat_t& beat(long b) const {
        const long i = b / kAxiPorts;
        switch (b % kAxiPorts) {
            case 0: return p0[i];
            case 1: return p1[i];
            case 2: return p2[i];
            default: return p3[i];
        }
    }
    // Line l of the buffer (absolute, not from base): one beat of every port in the same cycle.
    Line line(long l) const {
        Line out;
        for (int p = 0; p < kAxiPorts; ++p) {
#pragma HLS UNROLL
            out.beat[p] = beat(l * kAxiPorts + p);
        }
        return out;
    }
    // Single elements at byte `base + offset` (random access: one beat each; the caller keeps alignment).
    template <int BYTES>
    ap_uint<8 * BYTES> get(long offset) const {
        const long at = base + offset;
        const int lo = 8 * (int)(at % kBeatBytes);
        return beat(at / kBeatBytes).range(lo + 8 * BYTES - 1, lo);
    }
    template <int BYTES>
    void set(long offset, ap_uint<8 * BYTES> value) const {
        const long at = base + offset;
        const int lo = 8 * (int)(at % kBeatBytes);
        beat(at / kBeatBytes).range(lo + 8 * BYTES - 1, lo) = value;
    }
    word_t word(long w) const { return get<8>(8 * w); }
    float get_float(long i) const {
        const unsigned bits = (unsigned)get<4>(4 * i).to_uint();
        float v;
        std::memcpy(&v, &bits, 4);
        return v;
    }
    void set_float(long i, float v) const {
        unsigned bits;
        std::memcpy(&bits, &v, 4);
        set<4>(4 * i, ap_uint<32>(bits));
    }
    signed char get_byte(long i) const { return (signed char)(int)get<1>(i).to_uint(); }
    void set_byte(long i, signed char v) const { set<1>(i, ap_uint<8>((unsigned char)v)); }
};

inline float float_of(unsigned bits) {
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
}

// Read `n` elements of BYTES bytes from element `first` of the view a line a cycle; visit(i, bits) gets
// each in order. The lines covering [first, first + n) are read (an unaligned start costs one more line);
// returns how many.
template <int BYTES, class VISIT>
long read_span(const Ports& m, long first, long n, VISIT visit) {
    const long b0 = m.base + first * BYTES, b1 = b0 + n * BYTES;
    const long l0 = b0 / kLineBytes, l1 = (b1 + kLineBytes - 1) / kLineBytes;
    for (long l = l0; l < l1; ++l) {
#pragma HLS PIPELINE II = 1
        const Line line = m.line(l);
        for (int k = 0; k < kLineBytes / BYTES; ++k) {
#pragma HLS UNROLL
            const long at = l * kLineBytes + (long)k * BYTES;
            if (at >= b0 && at < b1) visit((at - b0) / BYTES, line.bytes_at<BYTES>(k * BYTES));
        }
    }
    return l1 - l0;
}

}  // namespace ek
