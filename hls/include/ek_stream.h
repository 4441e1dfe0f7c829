// edgekit HLS: a FIFO stream of our own (hls_stream.h's license text is unclear, see DESIGN.md section 7).
// Under Vitis synthesis it maps to hls::stream; under g++ it is a std::deque with the same read/write/empty.
#pragma once
#ifdef __SYNTHESIS__
#include <hls_stream.h>
namespace ek { template <typename T, int DEPTH = 2> using stream = hls::stream<T, DEPTH>; }
#else
#include <cstdio>
#include <cstdlib>
#include <deque>

namespace ek {

template <typename T, int DEPTH = 2>
class stream {
   public:
    void write(const T& value) { fifo_.push_back(value); }
    // Reading an empty stream is a deadlock in hardware; in C simulation it is a bug to stop on.
    T read() {
        if (fifo_.empty()) {
            std::fprintf(stderr, "ek::stream: read from an empty stream (a dataflow deadlock in hardware)\n");
            std::abort();
        }
        T value = fifo_.front();
        fifo_.pop_front();
        return value;
    }
    bool empty() const { return fifo_.empty(); }
    size_t size() const { return fifo_.size(); }

   private:
    std::deque<T> fifo_;
};

}  // namespace ek
#endif
