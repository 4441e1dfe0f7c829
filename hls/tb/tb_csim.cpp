// edgekit C-simulation testbench: each kernel and the top function against golden vectors that
// hls/reference.py (the numpy twin) wrote. Bit-exact: integers compare equal, floats compare equal as
// values. Prints "PASS name" or "FAIL name: ..." per check; the exit code counts the failures.
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "ek_config.h"
#include "ek_layer.h"
#include "ek_lmhead.h"

using ek::EkConfig;
typedef ek::Layout<EkConfig> Lay;
typedef ek::Engine<EkConfig> Eng;
typedef Lay::kv_t kv_t;   // float, or signed char for the int8 cache (ek_kvcache.h)

extern "C" void ek_top(ek::beat_t* weights, ek::beat_t* weights_1, ek::beat_t* weights_2, ek::beat_t* weights_3,
                       const float* params, const float* rope, ek::beat_t* kv, ek::beat_t* kv_1, ek::beat_t* kv_2,
                       ek::beat_t* kv_3, float* hbuf, ek::beat_t* head, ek::beat_t* head_1, ek::beat_t* head_2,
                       ek::beat_t* head_3, const float* head_params, int* top_ids, float* top_logits, float* logits,
                       int n_tokens, int start_pos, int layer_begin, int layer_end, int head_rows, int write_logits);

// A logical buffer striped over four port regions as the host lays it out (ek_axi.h; hls/packing.py
// stripe_ports): byte i sits in 16-byte beat b = i / 16, which is beat b / 4 of region b % 4.
struct Striped {
    std::vector<ek::beat_t> region[ek::kAxiPorts];
    template <typename T>
    explicit Striped(const std::vector<T>& data) {
        const long bytes = (long)(data.size() * sizeof(T)), lines = (bytes + ek::kLineBytes - 1) / ek::kLineBytes;
        for (auto& r : region) r.assign(lines, ek::beat_t(0));
        const unsigned char* src = reinterpret_cast<const unsigned char*>(data.data());
        for (long i = 0; i < bytes; ++i) byte(i) = src[i];
    }
    unsigned char& byte(long i) {
        const long b = i / ek::kBeatBytes;
        return reinterpret_cast<unsigned char*>(region[b % ek::kAxiPorts].data())[(b / ek::kAxiPorts) * ek::kBeatBytes + i % ek::kBeatBytes];
    }
    ek::Ports ports() { return {region[0].data(), region[1].data(), region[2].data(), region[3].data(), 0}; }
    template <typename T>
    std::vector<T> logical(size_t n) {
        std::vector<T> out(n);
        unsigned char* dst = reinterpret_cast<unsigned char*>(out.data());
        for (long i = 0; i < (long)(n * sizeof(T)); ++i) dst[i] = byte(i);
        return out;
    }
};

static const int TT = EkConfig::kTileTokens, K = EkConfig::kTopK, V = EkConfig::kVocab;

static std::vector<ek::word_t> read_words(const std::string& path);

// The device's head outputs for `rows` headed tokens.
struct HeadOut {
    std::vector<int> ids;
    std::vector<float> top, logits;
    explicit HeadOut(int rows) : ids(rows * K, -7), top(rows * K, 0.0f), logits((size_t)rows * V, 0.0f) {}
};

template <typename T>
static std::vector<T> read_file(const std::string& path) {
    std::vector<T> data;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        std::printf("FAIL io: cannot open %s\n", path.c_str());
        std::exit(100);
    }
    std::fseek(f, 0, SEEK_END);
    long bytes = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    data.resize(bytes / sizeof(T));
    size_t got = std::fread(data.data(), sizeof(T), data.size(), f);
    std::fclose(f);
    if (got != data.size()) std::exit(101);
    return data;
}

static std::map<std::string, int> read_meta(const std::string& path) {
    std::map<std::string, int> meta;
    FILE* f = std::fopen(path.c_str(), "r");
    char key[64];
    int value;
    while (f && std::fscanf(f, "%63s %d", key, &value) == 2) meta[key] = value;
    if (f) std::fclose(f);
    return meta;
}

static int failures = 0;

// Compare n values; report the first mismatch.
template <typename A, typename B>
static void check(const char* name, const A* got, const B* want, long n) {
    for (long i = 0; i < n; ++i) {
        if (!(got[i] == want[i])) {
            std::printf("FAIL %s: index %ld got %.9g want %.9g\n", name, i, (double)got[i], (double)want[i]);
            ++failures;
            return;
        }
    }
    std::printf("PASS %s (%ld values)\n", name, n);
}

static void test_exp() {
    std::vector<float> x = read_file<float>("golden/exp_x.bin"), want = read_file<float>("golden/exp_y.bin");
    std::vector<float> got(x.size());
    for (size_t i = 0; i < x.size(); ++i) got[i] = ek::exp_approx(x[i]);
    check("exp", got.data(), want.data(), (long)x.size());
}

static void test_quant() {
    std::vector<float> x = read_file<float>("golden/quant_x.bin"), want_s = read_file<float>("golden/quant_scale.bin");
    std::vector<int8_t> want_q = read_file<int8_t>("golden/quant_q.bin");
    static ek::act_t q[TT][Lay::kD];
    std::vector<int> got_q(TT * Lay::kD);
    std::vector<float> got_s(TT);
    for (int t = 0; t < TT; ++t) {
        got_s[t] = ek::quantize_input<Lay::kD, EkConfig::kLinearInputNorm>(&x[t * Lay::kD], q[t]);
        for (int i = 0; i < Lay::kD; ++i) got_q[t * Lay::kD + i] = (int)q[t][i];
    }
    check("quant_q", got_q.data(), want_q.data(), (long)got_q.size());
    check("quant_scale", got_s.data(), want_s.data(), TT);
}

static void test_tlmm(Striped& weights) {
    std::vector<int8_t> a = read_file<int8_t>("golden/tlmm_a.bin");
    std::vector<int32_t> want = read_file<int32_t>("golden/tlmm_y.bin");
    static ek::act_t x[TT][Lay::kD];
    static Eng::Tables tables;
    static ek::acc_t y[TT][Lay::kQDim];
    for (int t = 0; t < TT; ++t)
        for (int i = 0; i < Lay::kD; ++i) x[t][i] = a[t * Lay::kD + i];
    ek::build_tables<Eng::G, Eng::HALF, TT, Lay::kD, Lay::kMaxGroups>(x, TT, tables);
    ek::tlmm<Eng::G, Eng::HALF, EkConfig::kBase3, EkConfig::kLanes, TT, Lay::kQDim, Lay::kD, Lay::kMaxGroups>(
        weights.ports().at(8 * Lay::kWq), tables, TT, y);
    std::vector<int> got(TT * Lay::kQDim);
    for (int t = 0; t < TT; ++t)
        for (int o = 0; o < Lay::kQDim; ++o) got[t * Lay::kQDim + o] = (int)y[t][o];
    check("tlmm_wq_layer0", got.data(), want.data(), (long)got.size());
}

static void test_attention(const std::map<std::string, int>& meta) {
    std::vector<float> q = read_file<float>("golden/attn_q.bin");
    Striped kv(read_file<kv_t>("golden/attn_kv.bin"));
    std::vector<float> want = read_file<float>("golden/attn_out.bin");
    const int n = meta.at("attn_tokens"), p0 = meta.at("attn_start");
    static float qt[TT][Lay::kQDim], out[TT][Lay::kQDim];
    for (int t = 0; t < n; ++t)
        for (int i = 0; i < Lay::kQDim; ++i) qt[t][i] = q[t * Lay::kQDim + i];
    ek::attend_tile<Lay::Kv, EkConfig::kHeads, EkConfig::kKvHeads, Lay::kHd, TT, EkConfig::kMaxSeq, EkConfig::kKeyBlock,
                    EkConfig::kAttnInt>(
        qt, n, p0, kv.ports(), EkConfig::kInvSqrtHeadDim, out);
    std::vector<float> got(n * Lay::kQDim);
    for (int t = 0; t < n; ++t)
        for (int i = 0; i < Lay::kQDim; ++i) got[t * Lay::kQDim + i] = out[t][i];
    check("attention", got.data(), want.data(), (long)got.size());
}

static void check_head(const std::string& prefix, const HeadOut& out, int rows, bool logits) {
    std::vector<int32_t> want_ids = read_file<int32_t>("golden/" + prefix + "_top_ids.bin");
    std::vector<float> want_top = read_file<float>("golden/" + prefix + "_top_logits.bin");
    check((prefix + "_top_ids").c_str(), out.ids.data(), want_ids.data(), (long)rows * K);
    check((prefix + "_top_logits").c_str(), out.top.data(), want_top.data(), (long)rows * K);
    if (logits) {
        std::vector<float> want = read_file<float>("golden/" + prefix + "_logits.bin");
        check((prefix + "_logits").c_str(), out.logits.data(), want.data(), (long)rows * V);
    }
}

// The LM head kernel alone on hidden rows (row 0 all zeros: every logit 0, ties go to the lower id).
static void test_head(Striped& head, const std::vector<float>& head_params,
                      const std::map<std::string, int>& meta) {
    std::vector<float> x = read_file<float>("golden/head_x.bin");
    const int rows = meta.at("head_rows");
    HeadOut out(rows);
    for (int r = 0; r < rows; ++r)
        ek::Head<EkConfig>::run_row(head.ports(), head_params.data(), &x[(size_t)r * Lay::kD], &out.ids[r * K],
                                    &out.top[r * K], &out.logits[(size_t)r * V], true);
    check_head("head", out, rows, true);
    HeadOut top(rows);                         // the decode path: top-k only (screened when kHeadScreen > 0)
    for (int r = 0; r < rows; ++r)
        ek::Head<EkConfig>::run_row(head.ports(), head_params.data(), &x[(size_t)r * Lay::kD], &top.ids[r * K],
                                    &top.top[r * K], &top.logits[(size_t)r * V], false);
    check_head("head_topk", top, rows, false);
}

#define EK_REGIONS(s) s.region[0].data(), s.region[1].data(), s.region[2].data(), s.region[3].data()
#define WEIGHTS EK_REGIONS(weights)
#define KV EK_REGIONS(kv)
#define HEAD EK_REGIONS(head)

// The top function: layer 0 alone on the prompt, then every layer on the prompt and one decode step.
static void test_top(Striped& weights, Striped& head,
                     const std::vector<float>& head_params, const std::map<std::string, int>& meta) {
    std::vector<float> params = read_file<float>("data/params.bin"), rope = read_file<float>("data/rope.bin");
    std::vector<float> h0 = read_file<float>("golden/prompt_h.bin");
    const int n = meta.at("prompt_tokens");
    const size_t kv_items = (size_t)EkConfig::kLayers * Lay::kKvLayer;
    Striped kv(std::vector<kv_t>(kv_items, 0));
    std::vector<float> h = h0;
    HeadOut none(1), prompt(n), step(1);
    ek_top(WEIGHTS, params.data(), rope.data(), KV, h.data(), HEAD, head_params.data(),
           none.ids.data(), none.top.data(), none.logits.data(), n, 0, 0, 1, 0, 0);
    std::vector<float> want = read_file<float>("golden/layer0_h.bin");
    check("layer0_prefill", h.data(), want.data(), (long)h.size());
    std::vector<kv_t> want_kv = read_file<kv_t>("golden/layer0_kv.bin");
    check("layer0_kv", kv.logical<kv_t>(want_kv.size()).data(), want_kv.data(), (long)want_kv.size());

    kv = Striped(std::vector<kv_t>(kv_items, 0));
    h = h0;
    ek_top(WEIGHTS, params.data(), rope.data(), KV, h.data(), HEAD, head_params.data(),
           prompt.ids.data(), prompt.top.data(), prompt.logits.data(), n, 0, 0, EkConfig::kLayers, n, 1);
    want = read_file<float>("golden/model_prefill_h.bin");
    check("model_prefill", h.data(), want.data(), (long)h.size());
    check_head("prefill_head", prompt, n, true);
    std::vector<float> hd = read_file<float>("golden/decode_in.bin");
    ek_top(WEIGHTS, params.data(), rope.data(), KV, hd.data(), HEAD, head_params.data(),
           step.ids.data(), step.top.data(), step.logits.data(), 1, n, 0, EkConfig::kLayers, 1, 0);
    want = read_file<float>("golden/decode_out.bin");
    check("model_decode", hd.data(), want.data(), (long)hd.size());
    check_head("decode_head", step, 1, false);   // top-k only: the logits row stays unwritten
    bool untouched = true;
    for (float v : step.logits) untouched = untouched && v == 0.0f;
    std::printf("%s decode_logits_untouched\n", untouched ? "PASS" : "FAIL");
    failures += untouched ? 0 : 1;
}

static std::vector<ek::word_t> read_words(const std::string& path) {
    std::vector<uint64_t> raw = read_file<uint64_t>(path);
    std::vector<ek::word_t> words(raw.size());
    std::memcpy((void*)words.data(), raw.data(), raw.size() * sizeof(uint64_t));
    return words;
}

int main() {
    std::map<std::string, int> meta = read_meta("golden/meta.txt");
    Striped weights(read_words("data/weights.bin")), head(read_words("data/head.bin"));
    std::vector<float> head_params = read_file<float>("data/head_params.bin");
    test_exp();
    test_quant();
    test_tlmm(weights);
    test_attention(meta);
    test_head(head, head_params, meta);
    test_top(weights, head, head_params, meta);
    std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "ALL PASSED", failures);
    return failures;
}
