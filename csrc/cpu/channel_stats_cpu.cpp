// CPU kernel of mmdaq::grad_channel_stats: every statistic DAQ's clipping needs from G_Y, read
// straight from the [outer, C, inner] layout (no channel-major copy), one channel per task.
// A channel's values are read twice (abs-max and second moment; count and histogram); for the
// usual sizes (N*H*W floats, tens to hundreds of KiB) the second pass hits the cache. Both
// passes' arithmetic is vectorized (cpu_clones.h); the histogram adds stay scalar. The
// clip search then runs on the channel's histogram in O(num_bins), in registers and a local
// buffer, the same arithmetic as objective_curve_from_histograms in
// mmdaq/quantization/histogram_clip.py (its exp as a table times a polynomial, equal to
// rounding: see BinExp). Pass 1 also counts the exact zeros: they quantize
// exactly at any clip, so the objective takes them out of bin 0 (no rounding error charged).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "../channel_stats_args.h"
#include "../common/cpu_clones.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

namespace {

using Stats = mmdaq::ChannelStats;

// Pass 1 over a row of a channel: abs-max, the raw second moment (double: no overflow for any
// float), exact zeros (+0 and -0; NaN is not one) and the number of NaN/+-Inf values (v - v is
// NaN for those). Written so that it vectorizes: the abs-max as the integer max of the bit
// patterns without the sign (the same order as the values for finite floats; a channel with a
// non-finite value gets its abs-max from the non-finite branch), eight independent double
// sums (the order of a double sum moves sigma by far less than float32's rounding).
struct RowMoments {
  uint32_t abs_max_bits = 0;
  double sq = 0.0;
  int64_t zeros = 0, non_finite = 0;
};

MMDAQ_CPU_CLONES void add_row_moments(const float* __restrict__ row, int64_t n, RowMoments& acc) {
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(row);
  uint32_t m = acc.abs_max_bits;
  int64_t zeros = 0, non_finite = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = bits[i] & 0x7fffffffu;
    m = a > m ? a : m;
    zeros += row[i] == 0.0f;
    non_finite += !(row[i] - row[i] == 0.0f);
  }
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) s[k] += static_cast<double>(row[i + k]) * row[i + k];
  }
  for (; i < n; ++i) s[0] += static_cast<double>(row[i]) * row[i];
  acc.abs_max_bits = m;
  acc.zeros += zeros;
  acc.non_finite += non_finite;
  acc.sq += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// x = |g| / max as channel_histograms computes it: |g| * (1 / max), or the quotient where
// 1 / max overflows (a channel whose abs-max is below about 2**-128, which early detector
// training produces: inf and NaN there would give bins out of range).
template <bool kDivide>
inline float relative(float v, float inv, float m) {
  return kDivide ? std::fabs(v) / m : std::fabs(v) * inv;
}

// P(x > sigma) count of a row without a histogram (num_bins == 0).
template <bool kDivide>
MMDAQ_CPU_CLONES int64_t row_above(const float* __restrict__ row, int64_t n, float inv, float m,
                                   float sigma_rel) {
  int64_t above = 0;
  for (int64_t i = 0; i < n; ++i) above += relative<kDivide>(row[i], inv, m) > sigma_rel;
  return above;
}

// One bin of a channel's histogram: the count and the sum of x of its values, side by side
// (one cache line per add instead of two).
// (The count is a double, exact to 2**53: the merge below then has no int64 -> double
// conversion, which vectorizes only with AVX-512DQ.)
struct HistBin {
  double sum;
  double count;
};

// Pass 2, vectorized half: x, its bin and the count of x > sigma; the values of bins >= 1 are
// written (x, bin) to xs / idx for the scalar histogram adds. Bin 0 (x < 1 / B) is added up
// apart, into `first`: most values of a long-tailed gradient and every exact zero fall there,
// and adding each of them to the same memory cell would chain every add on the store of the
// one before. Returns the number of values written.
template <bool kDivide>
MMDAQ_CPU_CLONES int64_t row_bins(const float* __restrict__ row, int64_t n, float inv, float m,
                                  float bins, int32_t last_bin, float sigma_rel,
                                  float* __restrict__ xs, int32_t* __restrict__ idx, int64_t& above,
                                  HistBin& first) {
  int64_t above_n = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float x = relative<kDivide>(row[i], inv, m);
    xs[i] = x;
    above_n += x > sigma_rel;
    const int32_t b = static_cast<int32_t>(x * bins);
    idx[i] = b < last_bin ? b : last_bin;
  }
  above += above_n;
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {  // in place, without branches: always write, advance if b > 0
    const float x = xs[i];
    const int32_t b = idx[i];
    first.sum += b == 0 ? static_cast<double>(x) : 0.0;
    first.count += b == 0 ? 1.0 : 0.0;
    xs[kept] = x;
    idx[kept] = b;
    kept += b != 0;
  }
  return kept;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define MMDAQ_STATS_AVX512 1
#include <immintrin.h>

// row_bins with AVX-512: the same x, bins and comparisons (no FMA; truncation as
// static_cast), bin 0 summed in double lanes, the other values compacted in registers
// (vcompressps to a register, then a plain store: its memory form is slow on some cores).
template <bool kDivide>
__attribute__((target("avx512f"))) int64_t row_bins_avx512(const float* __restrict__ row, int64_t n,
                                                           float inv, float m, float bins,
                                                           int32_t last_bin, float sigma_rel,
                                                           float* __restrict__ xs,
                                                           int32_t* __restrict__ idx,
                                                           int64_t& above, HistBin& first) {
  const __m512 v_inv = _mm512_set1_ps(inv), v_m = _mm512_set1_ps(m);
  const __m512 v_bins = _mm512_set1_ps(bins), v_sigma = _mm512_set1_ps(sigma_rel);
  const __m512i v_last = _mm512_set1_epi32(last_bin);
  __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
  int64_t above_n = 0, first_n = 0, kept = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(row + i));
    const __m512 x = kDivide ? _mm512_div_ps(a, v_m) : _mm512_mul_ps(a, v_inv);
    above_n += __builtin_popcount(_mm512_cmp_ps_mask(x, v_sigma, _CMP_GT_OQ));
    const __m512i b = _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_mul_ps(x, v_bins)), v_last);
    const __mmask16 rest = _mm512_test_epi32_mask(b, b);
    const __m512 x0 = _mm512_maskz_mov_ps(static_cast<__mmask16>(~rest), x);
    sum_lo = _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(x0)));
    sum_hi = _mm512_add_pd(
        sum_hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x0), 1))));
    const int k = __builtin_popcount(rest);
    first_n += 16 - k;
    _mm512_storeu_ps(xs + kept, _mm512_maskz_compress_ps(rest, x));
    _mm512_storeu_si512(idx + kept, _mm512_maskz_compress_epi32(rest, b));
    kept += k;
  }
  above += above_n;
  first.count += static_cast<double>(first_n);
  first.sum += _mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi));
  // The last n % 16 values: the scalar form, written after the kept ones (kept <= i).
  return kept + row_bins<kDivide>(row + i, n - i, inv, m, bins, last_bin, sigma_rel, xs + kept,
                                  idx + kept, above, first);
}
#endif

// exp(alpha * (b / B - 1)) for every bin b, shared by all channels of a call, and whether the
// bin weights may use it: exp(alpha * (mean - 1)) = table[b] * exp(d) with d = alpha * (mean -
// b / B) in [0, alpha / B] (the mean of a bin's x lies in the bin), and a Taylor polynomial
// gives exp(d) to below a double's rounding: degree 12 for d <= 1/8 (remainder (1/8)**13 / 13!
// = 3e-22), degree 6 for d <= 1/64 (alpha 3 on 1024 bins: (1/64)**7 / 7! = 4e-17 < 2**-53).
// Unlike std::exp, it vectorizes.
// Also the candidate clips u_j = (j + 1) / B and u_j / (4 Q) of the search, divided once per
// call rather than twice per bin and channel (the same quotients).
struct BinExp {
  std::vector<double> table, lower, u, u_rounding;
  double alpha = 0.0;
  int degree = 0;  // of the polynomial; 0: std::exp
};

BinExp make_bin_exp(int64_t bins, double alpha, int64_t max_code) {
  BinExp e;
  e.u.resize(bins);
  e.u_rounding.resize(bins);
  for (int64_t j = 0; j < bins; ++j) {
    e.u[j] = static_cast<double>(j + 1) / bins;
    e.u_rounding[j] = e.u[j] / (4.0 * max_code);
  }
  e.alpha = alpha;
  const double d_max = bins > 0 ? alpha / static_cast<double>(bins) : 1.0;
  e.degree = d_max <= 1.0 / 64.0 ? 6 : d_max <= 0.125 ? 12 : 0;
  if (e.degree > 0) {
    const double inv_bins = 1.0 / static_cast<double>(bins);
    e.table.resize(bins);
    e.lower.resize(bins);
    for (int64_t b = 0; b < bins; ++b) {
      e.lower[b] = static_cast<double>(b) * inv_bins;
      e.table[b] = std::exp(alpha * (e.lower[b] - 1.0));
    }
  }
  return e;
}

// 1 / k! for k = 0 .. 12.
// clang-format off
constexpr double kInvFactorial[13] = {
    1.0,           1.0,            0.5,             1.0 / 6.0,        1.0 / 24.0,
    1.0 / 120.0,   1.0 / 720.0,    1.0 / 5040.0,    1.0 / 40320.0,    1.0 / 362880.0,
    1.0 / 3628800.0, 1.0 / 39916800.0, 1.0 / 479001600.0};
// clang-format on

// Weight n * exp(alpha * (mean - 1)) of a bin of n values with mean `mean` >= `lower` (the
// bin's lower edge b / B), and 0 for an empty bin; exp(d) by Horner's rule of degree kDegree.
// (Inlined into the caller's ISA clone: a call to a clone would keep the loop scalar.)
template <int kDegree>
inline __attribute__((always_inline)) double bin_weight(double n, double mean, double lower,
                                                        double table, double alpha) {
  const double d = alpha * (mean - lower);
  double p = kInvFactorial[kDegree];
  for (int k = kDegree - 1; k >= 0; --k) p = p * d + kInvFactorial[k];
  return n > 0.0 ? n * (table * p) : 0.0;
}

// Weights w[b] = n_b * exp(alpha * (mean_b - 1)) and w[b] * mean_b of a channel's bins (bin 0
// without the `zeros` exact zeros: they are exact at every clip). An empty bin weighs 0. Bin 0
// apart, so that the loop over the others has no index arithmetic to convert (int64 -> double
// needs AVX-512DQ) and vectorizes.
template <int kDegree>
MMDAQ_CPU_CLONES void bin_weights_polynomial(const double* __restrict__ cnt,
                                             const double* __restrict__ sum, int64_t bins,
                                             double zeros, const double* __restrict__ table,
                                             const double* __restrict__ lower, double alpha,
                                             double* __restrict__ w, double* __restrict__ wx) {
  const double n0 = std::max(cnt[0] - zeros, 0.0);
  const double mean0 = sum[0] / std::max(n0, 1.0);
  w[0] = bin_weight<kDegree>(n0, mean0, 0.0, table[0], alpha);
  wx[0] = w[0] * mean0;
  for (int64_t b = 1; b < bins; ++b) {
    const double n = cnt[b];
    const double mean = sum[b] / (n > 1.0 ? n : 1.0);
    const double weight = bin_weight<kDegree>(n, mean, lower[b], table[b], alpha);
    w[b] = weight;
    wx[b] = weight * mean;
  }
}

void bin_weights_exp(const double* cnt, const double* sum, int64_t bins, double zeros, double alpha,
                     double* w, double* wx) {
  for (int64_t b = 0; b < bins; ++b) {
    const double n = b == 0 ? std::max(cnt[0] - zeros, 0.0) : cnt[b];
    const double mean = sum[b] / std::max(n, 1.0);
    // An empty bin weighs 0 (n * exp(..) with n = 0): most bins of a small channel are empty.
    w[b] = n > 0.0 ? n * std::exp(alpha * (mean - 1.0)) : 0.0;
    wx[b] = w[b] * mean;
  }
}

// Suffix sums t[j] = v[j] + ... + v[bins - 1] of two arrays in place. The two halves run as
// independent chains (an add waits for the one before it), the lower one offset after.
MMDAQ_CPU_CLONES void suffix_sums(double* __restrict__ a, double* __restrict__ b, int64_t bins) {
  const int64_t half = bins / 2;
  double a_hi = 0.0, b_hi = 0.0, a_lo = 0.0, b_lo = 0.0;
  for (int64_t k = 1; k <= bins - half; ++k) {  // upper half [half, bins), lower [0, half)
    const int64_t j = bins - k;
    a_hi += a[j];
    b_hi += b[j];
    a[j] = a_hi;
    b[j] = b_hi;
    const int64_t i = half - k;
    if (i >= 0) {
      a_lo += a[i];
      b_lo += b[i];
      a[i] = a_lo;
      b[i] = b_lo;
    }
  }
  for (int64_t i = 0; i < half; ++i) {
    a[i] += a_hi;
    b[i] += b_hi;
  }
}

// Energy of every candidate clip u_j = (j + 1) / B from the suffix sums tw, twx of the bin
// weights: the values above u_j are those of bins > j.
MMDAQ_CPU_CLONES void candidate_energies(const double* __restrict__ tw,
                                         const double* __restrict__ twx,
                                         const double* __restrict__ u,
                                         const double* __restrict__ u_rounding, int64_t bins,
                                         double* __restrict__ energy) {
  const double total = tw[0];
  for (int64_t j = 0; j + 1 < bins; ++j) {
    const double above_w = tw[j + 1], above_wx = twx[j + 1];
    const double rounded = std::max(total - above_w, 0.0);
    energy[j] = above_wx - u[j] * above_w + u_rounding[j] * rounded;
  }
  // u = 1: nothing above, and the abs-max value is exact.
  energy[bins - 1] = u_rounding[bins - 1] * std::max(total - 1.0, 0.0);
}

// Smallest of n >= 1 values without NaN, in eight independent lanes (a single running min
// waits for the compare before it).
MMDAQ_CPU_CLONES double min_value(const double* __restrict__ v, int64_t n) {
  double m[8];
  for (int k = 0; k < 8; ++k) m[k] = v[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) m[k] = v[i + k] < m[k] ? v[i + k] : m[k];
  }
  for (; i < n; ++i) m[0] = v[i] < m[0] ? v[i] : m[0];
  double best = m[0];
  for (int k = 1; k < 8; ++k) best = m[k] < best ? m[k] : best;
  return best;
}

// Arg-min over the candidate clips u = (j + 1) / B of the model objective (ties: larger u).
// w, wx and energy: scratch buffers of `bins` values.
double objective_ratio(const double* cnt, const double* sum, int64_t bins, const BinExp& e,
                       double zeros, std::vector<double>& w, std::vector<double>& wx,
                       std::vector<double>& energy) {
  if (e.degree == 6) {
    bin_weights_polynomial<6>(cnt, sum, bins, zeros, e.table.data(), e.lower.data(), e.alpha,
                              w.data(), wx.data());
  } else if (e.degree == 12) {
    bin_weights_polynomial<12>(cnt, sum, bins, zeros, e.table.data(), e.lower.data(), e.alpha,
                               w.data(), wx.data());
  } else {
    bin_weights_exp(cnt, sum, bins, zeros, e.alpha, w.data(), wx.data());
  }
  suffix_sums(w.data(), wx.data(), bins);
  candidate_energies(w.data(), wx.data(), e.u.data(), e.u_rounding.data(), bins, energy.data());
  const double best = min_value(energy.data(), bins);
  int64_t best_j = bins - 1;
  while (best_j > 0 && !(energy[best_j] == best)) --best_j;
  return static_cast<double>(best_j + 1) / bins;
}

// row_bins of the ISA found at run time, for x = |g| * inv or (kDivide) |g| / m.
inline int64_t row_bins_dispatch(bool divide, bool avx512, const float* row, int64_t n, float inv,
                                 float m, float bins, int32_t last_bin, float sigma_rel, float* xs,
                                 int32_t* idx, int64_t& above, HistBin& first) {
#ifdef MMDAQ_STATS_AVX512
  if (avx512) {
    return divide ? row_bins_avx512<true>(row, n, inv, m, bins, last_bin, sigma_rel, xs, idx, above,
                                          first)
                  : row_bins_avx512<false>(row, n, inv, m, bins, last_bin, sigma_rel, xs, idx,
                                           above, first);
  }
#endif
  (void)avx512;
  return divide ? row_bins<true>(row, n, inv, m, bins, last_bin, sigma_rel, xs, idx, above, first)
                : row_bins<false>(row, n, inv, m, bins, last_bin, sigma_rel, xs, idx, above, first);
}

// cnt / sum of a channel from its two interleaved histograms h[0, bins) and h[bins, 2 bins),
// which are zeroed on the way (ready for the next channel, while their lines are in cache).
MMDAQ_CPU_CLONES void merge_histograms(HistBin* __restrict__ h, int64_t bins,
                                       double* __restrict__ cnt, double* __restrict__ sum) {
  HistBin* h1 = h + bins;
  for (int64_t b = 0; b < bins; ++b) {
    cnt[b] = h[b].count + h1[b].count;
    sum[b] = h[b].sum + h1[b].sum;
    h[b] = HistBin{0.0, 0.0};
    h1[b] = HistBin{0.0, 0.0};
  }
}

// Values whose x and bin are computed in one go before the histogram adds (fits in L1).
constexpr int64_t kChunk = 1024;

Stats grad_channel_stats_cpu(const at::Tensor& g, int64_t dim, int64_t num_bins, double alpha,
                             int64_t max_code, bool return_hist) {
  const auto layout =
      mmdaq::check_channel_stats_args(g, dim, num_bins, alpha, max_code, /*max_bins=*/-1);
  const int64_t outer = layout.outer, channels = layout.channels, inner = layout.inner;
  const int64_t count = outer * inner;
  const int64_t kept_bins = return_hist ? num_bins : 0;
  auto outputs = mmdaq::make_channel_stats_outputs(g, channels, kept_bins);
  auto& [abs_max, sigma, frac, ratio, hist_count, hist_sum, zero_count] = outputs;
  if (channels == 0 || count == 0) {
    return outputs;
  }
  const auto gc = g.contiguous();
  const float* gp = gc.data_ptr<float>();
  float* max_p = abs_max.data_ptr<float>();
  float* sigma_p = sigma.data_ptr<float>();
  float* frac_p = frac.data_ptr<float>();
  float* ratio_p = ratio.data_ptr<float>();
  double* cnt_out = hist_count.data_ptr<double>();
  double* sum_out = hist_sum.data_ptr<double>();
  int64_t* zeros_p = zero_count.data_ptr<int64_t>();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float bins = static_cast<float>(num_bins);

  const BinExp bin_exp = make_bin_exp(num_bins, alpha, max_code);
#ifdef MMDAQ_STATS_AVX512
  const bool avx512 = __builtin_cpu_supports("avx512f");
#else
  const bool avx512 = false;
#endif
  at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
    // Per-task buffers: one channel's histogram and the objective's bin weights.
    std::vector<double> cnt(num_bins), sum(num_bins), w(num_bins), wx(num_bins), energy(num_bins);
    std::vector<HistBin> hist(2 * num_bins, HistBin{0.0, 0.0});  // zeroed again by each merge
    std::vector<float> xs(kChunk);
    std::vector<int32_t> idx(kChunk);
    for (int64_t c = begin; c < end; ++c) {
      auto for_each = [&](auto&& fn) {
        for (int64_t o = 0; o < outer; ++o) {
          const float* row = gp + (o * channels + c) * inner;
          for (int64_t i = 0; i < inner; ++i) fn(row[i]);
        }
      };
      // Pass 1: abs-max, the raw second moment, the exact zeros, finiteness.
      RowMoments moments;
      for (int64_t o = 0; o < outer; ++o) {
        add_row_moments(gp + (o * channels + c) * inner, inner, moments);
      }
      float m;
      std::memcpy(&m, &moments.abs_max_bits, sizeof(m));
      const double sq = moments.sq;
      const int64_t zeros = moments.zeros;
      zeros_p[c] = zeros;
      // NaN/Inf: visible downstream, no statistics (matches the reference).
      if (moments.non_finite > 0) {
        bool has_nan = false;
        for_each([&](float v) { has_nan = has_nan || std::isnan(v); });
        max_p[c] = has_nan ? nan : std::numeric_limits<float>::infinity();
        sigma_p[c] = nan;
        frac_p[c] = nan;
        ratio_p[c] = nan;
        continue;
      }
      max_p[c] = m;
      if (m == 0.0f) {  // all-zero channel: sigma 0, nothing above it, everything in bin 0
        if (kept_bins > 0) cnt_out[c * num_bins] = static_cast<double>(count);
        continue;
      }
      // sigma of x = |g| / max, in [0, 1] (the reference's form).
      const double md = m;
      const float sigma_rel = static_cast<float>(std::sqrt(sq / count) / md);
      // Pass 2: P(x > sigma) and the histogram of x (x as the reference computes it, so the
      // same bins).
      int64_t above = 0;
      const float inv = 1.0f / m;  // x = |g| * (1 / max), exactly as channel_histograms does
      const bool divide = std::isinf(inv);  // see relative()
      if (num_bins > 0) {
        // Two interleaved histograms: consecutive values often fall into the same bin, and
        // one array would chain every increment on the previous one.
        HistBin* h0 = hist.data();
        HistBin* h1 = hist.data() + num_bins;
        HistBin first{0.0, 0.0};  // bin 0, see row_bins
        const int32_t last_bin = static_cast<int32_t>(num_bins - 1);
        for (int64_t o = 0; o < outer; ++o) {
          const float* row = gp + (o * channels + c) * inner;
          for (int64_t r0 = 0; r0 < inner; r0 += kChunk) {  // x and bins of a chunk, then add
            const int64_t len = std::min(kChunk, inner - r0);
            const int64_t kept =
                row_bins_dispatch(divide, avx512, row + r0, len, inv, m, bins, last_bin, sigma_rel,
                                  xs.data(), idx.data(), above, first);
            int64_t i = 0;
            for (; i + 1 < kept; i += 2) {
              HistBin& e0 = h0[idx[i]];
              e0.count += 1.0;
              e0.sum += static_cast<double>(xs[i]);
              HistBin& e1 = h1[idx[i + 1]];
              e1.count += 1.0;
              e1.sum += static_cast<double>(xs[i + 1]);
            }
            for (; i < kept; ++i) {
              h0[idx[i]].count += 1.0;
              h0[idx[i]].sum += static_cast<double>(xs[i]);
            }
          }
        }
        merge_histograms(hist.data(), num_bins, cnt.data(), sum.data());
        cnt[0] += first.count;
        sum[0] += first.sum;
      } else {
        for (int64_t o = 0; o < outer; ++o) {
          const float* row = gp + (o * channels + c) * inner;
          above += divide ? row_above<true>(row, inner, inv, m, sigma_rel)
                          : row_above<false>(row, inner, inv, m, sigma_rel);
        }
      }
      sigma_p[c] = sigma_rel * m;
      frac_p[c] = static_cast<float>(static_cast<double>(above) / count);
      if (num_bins > 0) {
        ratio_p[c] = static_cast<float>(objective_ratio(cnt.data(), sum.data(), num_bins, bin_exp,
                                                        static_cast<double>(zeros), w, wx, energy));
      }
      if (kept_bins > 0) {
        std::copy(cnt.begin(), cnt.end(), cnt_out + c * num_bins);
        std::copy(sum.begin(), sum.end(), sum_out + c * num_bins);
      }
    }
  });
  return outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) { m.impl("grad_channel_stats", &grad_channel_stats_cpu); }
