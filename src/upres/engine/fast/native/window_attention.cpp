// Window attention for narrow heads, fused: softmax(q k^T * scale + bias [+ mask]) v.
//
// Why hand-written: for DAT's 10-wide heads over 256-token windows, torch's CPU path makes
// 256 scores per 10-channel dot product, writes them all to memory and runs them through a
// separate softmax; SDPA's CPU kernel is slower still at this width and ONNX Runtime has no
// such kernel. Here the scores of sixteen query rows stay in L1: one pass makes them, the
// next exponentiates them and multiplies them into v.
//
// Portable C++17 with GCC/Clang vector extensions, compiled on the user's machine with
// -march=native (engine/fast/native/__init__.py), so the vectors are whatever it has
// (AVX-512, AVX2, NEON). Threads come from OpenMP, the same runtime torch runs on.
//
// Layout: q, k, v, out are (units, n, d) row-major, unit = (batch * windows + window) *
// heads + head, float32 or bfloat16; bias_t is (heads, n, n) float32 transposed
// ([key][query]) or null; mask_of_window[window] is a row of masks_t (rows, n, n) float32,
// transposed likewise, or -1 (or the whole array null); n a multiple of 16.

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#include <immintrin.h>
#define BF16_DOT 1  // bfloat16 pairs multiplied and summed into float32 in one instruction
#else
#define BF16_DOT 0
#endif

namespace {

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
constexpr int LANES = 16;
constexpr int GROUP = 4;  // score vectors summed side by side: hides the FMA latency

inline vf splat(float x) { return vf{} + x; }
inline vf load(const float *p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline float hsum(vf a) { float s = 0; for (int l = 0; l < LANES; l++) s += a[l]; return s; }
inline float hmax(vf a) { float m = a[0]; for (int l = 1; l < LANES; l++) m = a[l] > m ? a[l] : m; return m; }

// e^(x - top) for x <= top, relative error below 3e-6: 2^n * 2^f with n = round(t),
// f = t - n in [-1/2, 1/2], t = (x - top) log2(e); 2^f by its Taylor series to f^5.
inline vf exp_below(vf x, vf top_log2e) {
    vf t = x * 1.44269504f - top_log2e;
    t = vmax(t, splat(-64.0f));  // 2^-64 of the largest is nothing in float32, and never denormal
    const vf shifted = t + 12582912.0f;  // 1.5 * 2^23: round to nearest, n in the low bits
    const vf f = t - (shifted - 12582912.0f);
    vf p = splat(1.3333558e-3f);  // ln(2)^k / k!
    p = p * f + 9.6181291e-3f; p = p * f + 5.5504109e-2f; p = p * f + 0.24022651f;
    p = p * f + 0.69314718f; p = p * f + 1.0f;
    vi bits; std::memcpy(&bits, &shifted, sizeof bits);
    bits = (bits << 23) + (127 << 23);  // the magic number's own bits shift out
    vf power; std::memcpy(&power, &bits, sizeof power);
    return p * power;
}

inline float to_float(float x) { return x; }
inline float to_float(uint16_t bf16) { uint32_t b = uint32_t(bf16) << 16; float f; std::memcpy(&f, &b, 4); return f; }
template <typename T> T from_float(float x);
template <> float from_float<float>(float x) { return x; }
template <> uint16_t from_float<uint16_t>(float x) {  // round to nearest even, as torch does
    uint32_t b; std::memcpy(&b, &x, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return uint16_t((b >> 16) | 0x40);  // NaN stays NaN
    b += 0x7fff + ((b >> 16) & 1);
    return uint16_t(b >> 16);
}

// Where a window's tokens are: image offsets (in elements) of its n pixels, row-major within
// the window, for a cyclic shift (the reference rolls the image by -shift, cuts windows,
// attends, and rolls back: reading and writing the pixels where they are does the same).
struct Image {
    const char *q, *k, *v;  // first pixel's first channel of this branch
    char *out;
    long in_batch, in_row, in_col, out_batch, out_row, out_col;  // strides, in elements
};

void pixel_offsets(const Image &image, int b, int top, int left, int win_h, int win_w, int height,
                   int width, long *in, long *out)
{
    for (int y = 0; y < win_h; y++)
        for (int x = 0; x < win_w; x++) {
            const int row = (top + y) % height, col = (left + x) % width;
            in[y * win_w + x] = b * image.in_batch + row * image.in_row + col * image.in_col;
            out[y * win_w + x] = b * image.out_batch + row * image.out_row + col * image.out_col;
        }
}

// One (window, head), sixteen query rows at a time, each vector lane one query row: every
// step is then lane-wise (no horizontal sums), keys and values are read as scalars.
// bias_t and mask_t are transposed: [key][query].
template <typename T, int D>
void attend_unit(const T *q, const T *k, const T *v, T *out, const long *in_at, const long *out_at,
                 int n, const float *bias_t, const float *mask_t, float scale, float *keys,
                 float *values, vf *scores)
{
    for (int j = 0; j < n; j++)
        for (int c = 0; c < D; c++) {
            keys[j * D + c] = to_float(k[in_at[j] + c]);
            values[j * D + c] = to_float(v[in_at[j] + c]);
        }
    for (int first = 0; first < n; first += LANES) {
        vf query[D];
        for (int c = 0; c < D; c++)
            for (int l = 0; l < LANES; l++) query[c][l] = scale * to_float(q[in_at[first + l] + c]);
        vf top = splat(-3.0e38f);
        for (int j0 = 0; j0 < n; j0 += GROUP) {
            vf acc[GROUP];
            for (int g = 0; g < GROUP; g++) {
                const long at = long(j0 + g) * n + first;
                acc[g] = (bias_t ? load(bias_t + at) : splat(0)) + (mask_t ? load(mask_t + at) : splat(0));
            }
            for (int c = 0; c < D; c++)
                for (int g = 0; g < GROUP; g++) acc[g] += query[c] * keys[(j0 + g) * D + c];
            for (int g = 0; g < GROUP; g++) { scores[j0 + g] = acc[g]; top = vmax(top, acc[g]); }
        }
        const vf top_log2e = top * 1.44269504f;
        vf total = splat(0), acc[D];
        for (int c = 0; c < D; c++) acc[c] = splat(0);
        for (int j = 0; j < n; j++) {
            const vf p = exp_below(scores[j], top_log2e);
            total += p;
            for (int c = 0; c < D; c++) acc[c] += p * values[j * D + c];
        }
        const vf inverse = 1.0f / total;
        for (int c = 0; c < D; c++) {
            const vf o = acc[c] * inverse;
            for (int l = 0; l < LANES; l++) out[out_at[first + l] + c] = from_float<T>(o[l]);
        }
    }
}

#if BF16_DOT
// attend_unit for bfloat16 inputs on CPUs with AVX512-BF16: q k^T and p v by dot products of
// channel (or key) pairs, half the instructions of float32 FMAs. The probabilities are
// rounded to bfloat16 for p v, as torch's bf16 path rounds them too.
inline uint32_t pair_at(const uint16_t *p) { uint32_t w; std::memcpy(&w, p, 4); return w; }

template <int D>
void attend_unit_bf16(const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *out,
                      const long *in_at, const long *out_at, int n, const float *bias_t,
                      const float *mask_t, float scale, uint32_t *key_pairs,
                      uint32_t *value_pairs, vf *scores)
{
    constexpr int PAIRS = D / 2;
    for (int j = 0; j < n; j++)
        for (int c = 0; c < PAIRS; c++) key_pairs[j * PAIRS + c] = pair_at(k + in_at[j] + 2 * c);
    for (int j = 0; j < n; j += 2)  // values of keys j and j + 1, channel by channel
        for (int c = 0; c < D; c++)
            value_pairs[(j / 2) * D + c] = uint32_t(v[in_at[j] + c]) | uint32_t(v[in_at[j + 1] + c]) << 16;
    alignas(64) static const uint16_t interleave[32] = {
        0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
        8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i order = _mm512_load_si512(interleave);
    for (int first = 0; first < n; first += LANES) {
        __m512bh query[PAIRS];
        for (int c = 0; c < PAIRS; c++) {
            alignas(64) uint32_t lanes[LANES];
            for (int l = 0; l < LANES; l++) lanes[l] = pair_at(q + in_at[first + l] + 2 * c);
            query[c] = (__m512bh)_mm512_load_si512(lanes);
        }
        vf top = splat(-3.0e38f);
        for (int j0 = 0; j0 < n; j0 += GROUP) {
            __m512 acc[GROUP];
            for (int g = 0; g < GROUP; g++) acc[g] = _mm512_setzero_ps();
            for (int c = 0; c < PAIRS; c++)
                for (int g = 0; g < GROUP; g++) {
                    const __m512i key = _mm512_set1_epi32(int(key_pairs[(j0 + g) * PAIRS + c]));
                    acc[g] = _mm512_dpbf16_ps(acc[g], query[c], (__m512bh)key);
                }
            for (int g = 0; g < GROUP; g++) {
                const long at = long(j0 + g) * n + first;
                vf s = (vf)acc[g] * scale + (bias_t ? load(bias_t + at) : splat(0));
                if (mask_t) s += load(mask_t + at);
                scores[j0 + g] = s;
                top = vmax(top, s);
            }
        }
        const vf top_log2e = top * 1.44269504f;
        vf total = splat(0);
        __m512 acc[D];
        for (int c = 0; c < D; c++) acc[c] = _mm512_setzero_ps();
        for (int j = 0; j < n; j += 2) {
            const vf p0 = exp_below(scores[j], top_log2e), p1 = exp_below(scores[j + 1], top_log2e);
            total += p0 + p1;
            const __m512bh both = (__m512bh)_mm512_permutexvar_epi16(
                order, (__m512i)_mm512_cvtne2ps_pbh((__m512)p1, (__m512)p0));
            for (int c = 0; c < D; c++) {
                const __m512i pair = _mm512_set1_epi32(int(value_pairs[(j / 2) * D + c]));
                acc[c] = _mm512_dpbf16_ps(acc[c], both, (__m512bh)pair);
            }
        }
        const vf inverse = 1.0f / total;
        for (int c = 0; c < D; c++) {
            const vf o = (vf)acc[c] * inverse;
            for (int l = 0; l < LANES; l++) out[out_at[first + l] + c] = from_float<uint16_t>(o[l]);
        }
    }
}
#endif

struct Windows {
    int batch, height, width, win_h, win_w, shift_y, shift_x, heads;
};

template <typename T, int D>
void attend_all(const Image &image, const Windows &w, const float *bias_t,
                const int32_t *mask_of_window, const float *masks_t, float scale, int threads)
{
    const int n = w.win_h * w.win_w, rows = w.height / w.win_h, cols = w.width / w.win_w;
    const long units = long(w.batch) * rows * cols * w.heads;
#pragma omp parallel num_threads(threads)
    {
        std::vector<float> keys(D * n), values(D * n);  // float32, or bfloat16 pairs
        std::vector<vf> scores(n);
        std::vector<long> in_at(n), out_at(n);
        long offsets_of = -1;  // the window whose offsets are in in_at and out_at
        // Handed out a window (all its heads) at a time as threads come free: where another
        // process takes part of a core, the other threads do more windows, not wait for it.
#pragma omp for schedule(dynamic, w.heads)
        for (long unit = 0; unit < units; unit++) {
            const int head = int(unit % w.heads);
            const long window_in_batch = unit / w.heads;
            const int window = int(window_in_batch % (long(rows) * cols));
            const int b = int(window_in_batch / (long(rows) * cols));
            if (window_in_batch != offsets_of) {
                pixel_offsets(image, b, (window / cols) * w.win_h + w.shift_y,
                              (window % cols) * w.win_w + w.shift_x, w.win_h, w.win_w, w.height,
                              w.width, in_at.data(), out_at.data());
                offsets_of = window_in_batch;
            }
            const int mask_index = mask_of_window ? mask_of_window[window] : -1;
            const long channel = long(head) * D;
            const T *q = (const T *)image.q + channel, *k = (const T *)image.k + channel,
                    *v = (const T *)image.v + channel;
            T *out = (T *)image.out + channel;
            const float *bias = bias_t ? bias_t + long(head) * n * n : nullptr;
            const float *mask = mask_index >= 0 ? masks_t + long(mask_index) * n * n : nullptr;
#if BF16_DOT
            if constexpr (std::is_same_v<T, uint16_t> && D % 2 == 0) {
                attend_unit_bf16<D>(q, k, v, out, in_at.data(), out_at.data(), n, bias, mask, scale,
                                    (uint32_t *)keys.data(), (uint32_t *)values.data(), scores.data());
                continue;
            }
#endif
            attend_unit<T, D>(q, k, v, out, in_at.data(), out_at.data(), n, bias, mask, scale,
                              keys.data(), values.data(), scores.data());
        }
    }
}

template <typename T>
int dispatch(const Image &image, const Windows &w, int d, const float *bias_t,
             const int32_t *mask_of_window, const float *masks_t, float scale, int threads)
{
    switch (d) {
#define HEAD_WIDTH(D) case D: attend_all<T, D>(image, w, bias_t, mask_of_window, masks_t, scale, threads); return 0;
    HEAD_WIDTH(8) HEAD_WIDTH(10) HEAD_WIDTH(12) HEAD_WIDTH(16)
#undef HEAD_WIDTH
    }
    return 1;
}

}  // namespace

// Attention in the (win_h x win_w) windows of a (batch, height, width, heads * d) image,
// after a cyclic shift of (-shift_y, -shift_x); q, k and v share their strides. Returns 0
// when done, 1 for a size it was not built for (nothing written).
extern "C" int upres_window_attention(
    const void *q, const void *k, const void *v, void *out, int bf16,
    int batch, int height, int width, long in_batch, long in_row, long in_col,
    long out_batch, long out_row, long out_col, int win_h, int win_w, int shift_y, int shift_x,
    int heads, int d, const float *bias_t, const int32_t *mask_of_window, const float *masks_t,
    float scale, int threads)
{
    const int n = win_h * win_w;
    if (n % LANES != 0 || height % win_h != 0 || width % win_w != 0) return 1;
    const Windows w{batch, height, width, win_h, win_w, shift_y, shift_x, heads};
    Image image{(const char *)q, (const char *)k, (const char *)v, (char *)out,
                in_batch, in_row, in_col, out_batch, out_row, out_col};
    if (bf16) return dispatch<uint16_t>(image, w, d, bias_t, mask_of_window, masks_t, scale, threads);
    return dispatch<float>(image, w, d, bias_t, mask_of_window, masks_t, scale, threads);
}

// The head widths built in, for the Python side to ask.
extern "C" int upres_window_attention_supports(int d) { return d == 8 || d == 10 || d == 12 || d == 16; }
