// edgekit HLS: data types shared by every kernel.
// ap_int comes from $XILINX_HLS/include under Vitis, or from hls4ml's Apache-2.0 copy under g++ (csim).
#pragma once
#include <ap_int.h>
#include <cmath>
#include <cstdint>

namespace ek {

typedef ap_uint<64> word_t;   // one AXI beat of packed trit-group codes (LSB-first slots)
typedef ap_int<8> act_t;      // per-token absmax int8 activation (BitNet A8), in [-127, 127]
// A lookup-table entry: a signed sum of G int8 activations, |s| <= 127 * G: EK_ENTRY_BITS (ek_config.h sets
// bits_for(127 G) + 1, 10 bits for G = 3) narrows every table bank and every lane's entry mux to that width.
#ifndef EK_ENTRY_BITS
#define EK_ENTRY_BITS 16
#endif
typedef ap_int<EK_ENTRY_BITS> entry_t;
typedef ap_int<32> acc_t;     // int32 accumulator of table lookups

static_assert(sizeof(word_t) == 8, "ap_uint<64> must be one 64-bit word (the host passes uint64 arrays)");

// 3^g at compile time; the group states of G trits.
constexpr int pow3(int g) { return g == 0 ? 1 : 3 * pow3(g - 1); }
// Bits to hold values 0..n (n >= 1).
constexpr int bits_for(int n) { return n <= 1 ? 1 : 1 + bits_for(n >> 1); }
constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Work counters for C simulation (never in synthesis): how many pipelined iterations each engine ran, so
// tests can hold the cycle model (fpga/estimate.py) to the code. Slots: see EK_COUNTER_* below.
enum { EK_COUNTER_TLMM = 0, EK_COUNTER_TABLES = 1, EK_COUNTER_ATTN_MACS = 2, EK_COUNTER_CALLS = 3, EK_COUNTER_HEAD = 4,
       EK_COUNTER_AXI_LINES = 5, EK_COUNTERS = 8 };   // AXI_LINES: 64-byte lines the wide loaders read (ek_axi.h)
#if defined(__SYNTHESIS__)
#define EK_COUNT(slot, n)
#else
inline long* counters() {
    static long values[EK_COUNTERS] = {0};
    return values;
}
#define EK_COUNT(slot, n) (::ek::counters()[slot] += (n))
#endif

}  // namespace ek
