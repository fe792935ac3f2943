/* RTNeural's compile-time GRU-40 model (GRULayerT<float, 1, 40> then
 * DenseT<float, 40, 1>, the Eigen backend), timed per sample the way
 * harness.c times nnc's `step`: bench.py builds it when RTNEURAL_DIR names
 * an RTNeural checkout (the folder that holds RTNeural/gru/gru_eigen.h).
 *
 *   c++ -std=c++17 -O3 -march=native -DNDEBUG -I$RTNEURAL_DIR -I/usr/include/eigen3 \
 *       rtneural_gru40.cpp -o rtneural_gru40
 *   ./rtneural_gru40 WEIGHTS [BLOCKS]   median ns per sample (one number)
 *   ./rtneural_gru40 WEIGHTS check N    the outputs of N samples x[i] = sin(0.01 i), one a line
 *
 * WEIGHTS holds little-endian float32 PyTorch tensors, in this order:
 * rec.weight_ih_l0 [120, 1], rec.weight_hh_l0 [120, 40], rec.bias_ih_l0
 * [120], rec.bias_hh_l0 [120], lin.weight [1, 40], lin.bias [1]. They are
 * loaded as RTNeural's torch_helpers load a PyTorch GRU: transposed, with
 * PyTorch's gate order (r, z, n) turned into RTNeural's (z, r, c). The
 * per-sample call is what RTNeural's ModelT::forward does for these two
 * layers: copy the input in, each layer's forward on the previous outs,
 * return the first output.
 */
#define RTNEURAL_USE_EIGEN 1
#ifndef RTNEURAL_DEFAULT_ALIGNMENT
#define RTNEURAL_DEFAULT_ALIGNMENT 16
#endif
#ifndef RTNEURAL_NAMESPACE
#define RTNEURAL_NAMESPACE RTNeural
#endif
#include <RTNeural/gru/gru_eigen.h>
#include <RTNeural/gru/gru_eigen.tpp>
#include <RTNeural/dense/dense_eigen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr int F = 1, H = 40;

struct Model {
    RTNeural::GRULayerT<float, F, H> gru;
    RTNeural::DenseT<float, H, 1> dense;
    Eigen::Matrix<float, F, 1> in;

    float forward(const float* x) noexcept {
        for (int i = 0; i < F; ++i) in(i) = x[i];
        gru.forward(in);
        dense.forward(gru.outs);
        return dense.outs(0);
    }
};

bool load(Model& m, const char* path) {
    const size_t n = 3 * H * F + 3 * H * H + 3 * H + 3 * H + H + 1;
    std::vector<float> w(n);
    FILE* f = std::fopen(path, "rb");
    if (!f) return false;
    const size_t got = std::fread(w.data(), sizeof(float), n, f);
    std::fclose(f);
    if (got != n) return false;
    const float *wih = w.data(), *whh = wih + 3 * H * F, *bih = whh + 3 * H * H, *bhh = bih + 3 * H;
    const float *lw = bhh + 3 * H, *lb = lw + H;
    auto torch_row = [](int k) { return k < H ? k + H : (k < 2 * H ? k - H : k); };   // (z, r, c) <- (r, z, n)
    std::vector<std::vector<float>> wv(F, std::vector<float>(3 * H)), uv(H, std::vector<float>(3 * H)),
        bv(2, std::vector<float>(3 * H)), dv(1, std::vector<float>(H));
    for (int k = 0; k < 3 * H; ++k) {
        const int r = torch_row(k);
        for (int i = 0; i < F; ++i) wv[i][k] = wih[r * F + i];
        for (int i = 0; i < H; ++i) uv[i][k] = whh[r * H + i];
        bv[0][k] = bih[r];
        bv[1][k] = bhh[r];
    }
    for (int i = 0; i < H; ++i) dv[0][i] = lw[i];
    m.gru.setWVals(wv);
    m.gru.setUVals(uv);
    m.gru.setBVals(bv);
    m.dense.setWeights(dv);
    float b = lb[0];
    m.dense.setBias(&b);
    m.gru.reset();
    return true;
}

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

volatile float sink;

}  // namespace

int main(int argc, char** argv) {
    static Model m;
    if (argc < 2 || !load(m, argv[1])) {
        std::fprintf(stderr, "usage: rtneural_gru40 WEIGHTS [BLOCKS | check N]\n");
        return 1;
    }
    if (argc > 3 && std::strcmp(argv[2], "check") == 0) {
        const int n = std::atoi(argv[3]);
        for (int i = 0; i < n; ++i) {
            const float x = (float)std::sin(0.01 * (double)i);
            std::printf("%.9g\n", m.forward(&x));
        }
        return 0;
    }
    int blocks = argc > 2 ? std::atoi(argv[2]) : 31;
    if (blocks < 1 || blocks > 101) blocks = 31;
    const float x = 0.0f;              /* harness.c's `step` input: x[0] = sin(0) */
    long reps = 1;
    for (;;) {                         /* calibrate: a block of calls lasts about 2 ms */
        const double start = now();
        for (long i = 0; i < reps; ++i) sink = m.forward(&x);
        if (now() - start > 2e-3) break;
        reps *= 2;
    }
    std::vector<double> times(blocks);
    for (int b = 0; b < blocks; ++b) {
        const double start = now();
        for (long i = 0; i < reps; ++i) sink = m.forward(&x);
        times[b] = (now() - start) / (double)reps;
    }
    std::sort(times.begin(), times.end());
    std::printf("%.1f\n", times[blocks / 2] * 1e9);
    return 0;
}
