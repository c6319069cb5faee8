// CPU kernel of mmdaq::int8_channels_last: the [N, C, L] -> [N, L, C] transpose of int8 codes
// (optionally shifted to uint8 by +128) in one pass, in 16 x 16 blocks.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../common/check.h"
#include "../common/cpu_clones.h"

namespace {

constexpr int64_t kBlock = 16;

// One kBlock x kBlock block (channels [c0, c0 + 16) x positions [l0, l0 + 16) of one sample)
// turned around in a local buffer: contiguous 16-byte reads and writes, vectorized.
MMDAQ_CPU_CLONES void full_block(const int8_t* __restrict__ in, uint8_t* __restrict__ o, int64_t c,
                                 int64_t l, int64_t l0, int64_t c0, uint8_t flip) {
  uint8_t t[kBlock][kBlock];
  for (int64_t j = 0; j < kBlock; ++j) {
    for (int64_t i = 0; i < kBlock; ++i) t[i][j] = static_cast<uint8_t>(in[(c0 + j) * l + l0 + i]);
  }
  for (int64_t i = 0; i < kBlock; ++i) {
    uint8_t* dst = o + (l0 + i) * c + c0;
    // code + 128 in [1, 255]: flipping the sign bit (flip = 0x80) is the same as adding 128.
    for (int64_t j = 0; j < kBlock; ++j) dst[j] = t[i][j] ^ flip;
  }
}

// A block narrower than kBlock in positions (w) or channels (h): the weights' few taps, the
// last positions or channels. The same as full_block with run-time sizes, in a function of its
// own: with the sizes and pointers as by-value restrict arguments the compiler need not reload
// them after every byte store (uint8_t stores may alias anything reached by reference).
MMDAQ_CPU_CLONES void edge_block(const int8_t* __restrict__ in, uint8_t* __restrict__ o, int64_t c,
                                 int64_t l, int64_t l0, int64_t w, int64_t c0, int64_t h,
                                 uint8_t flip) {
  uint8_t t[kBlock][kBlock];
  for (int64_t j = 0; j < h; ++j) {
    const int8_t* src = in + (c0 + j) * l + l0;
    for (int64_t i = 0; i < w; ++i) t[i][j] = static_cast<uint8_t>(src[i]);
  }
  for (int64_t i = 0; i < w; ++i) {
    uint8_t* dst = o + (l0 + i) * c + c0;
    for (int64_t j = 0; j < h; ++j) dst[j] = t[i][j] ^ flip;
  }
}

// One row of a weight with few taps: [C, K] -> K runs of C codes, tap t's run at
// o + t * tap_stride (tap_stride may be negative: the taps reversed). In blocks of kWideC
// channels: a contiguous read of the block, then per tap a strided read of it (in L1) and a
// contiguous write. K a compile-time constant for the common kernels (3, 3x3, 3x3x3, 1x3x3's
// 9...), so that the compiler turns the strided reads into shuffles.
constexpr int64_t kWideC = 64;
template <int64_t K>
MMDAQ_CPU_CLONES void taps_row_fixed(const int8_t* __restrict__ in, uint8_t* __restrict__ o,
                                     int64_t c, int64_t tap_stride, uint8_t flip) {
  int64_t c0 = 0;
  for (; c0 + kWideC <= c; c0 += kWideC) {
    const int8_t* src = in + c0 * K;
    for (int64_t t = 0; t < K; ++t) {
      uint8_t* dst = o + t * tap_stride + c0;
      for (int64_t j = 0; j < kWideC; ++j) dst[j] = static_cast<uint8_t>(src[j * K + t]) ^ flip;
    }
  }
  for (int64_t t = 0; t < K; ++t) {
    uint8_t* dst = o + t * tap_stride;
    for (int64_t j = c0; j < c; ++j) dst[j] = static_cast<uint8_t>(in[j * K + t]) ^ flip;
  }
}

MMDAQ_CPU_CLONES void taps_row_any(const int8_t* __restrict__ in, uint8_t* __restrict__ o,
                                   int64_t c, int64_t k, int64_t tap_stride, uint8_t flip) {
  for (int64_t c0 = 0; c0 < c; c0 += kWideC) {
    const int64_t h = std::min(kWideC, c - c0);
    for (int64_t t = 0; t < k; ++t) {
      const int8_t* src = in + c0 * k + t;
      uint8_t* dst = o + t * tap_stride + c0;
      for (int64_t j = 0; j < h; ++j) dst[j] = static_cast<uint8_t>(src[j * k]) ^ flip;
    }
  }
}

// Calls fn(std::integral_constant<int64_t, K>) for the tap counts with a compiled loop of their
// own (1, 2, 3, 4, 5, 7 and the 3x3 / 3x3x3 kernels' 9 and 27), fn(constant 0) for any other.
template <typename Fn>
void with_taps(int64_t k, Fn&& fn) {
  using std::integral_constant;
  switch (k) {
    case 1:
      return fn(integral_constant<int64_t, 1>{});
    case 2:
      return fn(integral_constant<int64_t, 2>{});
    case 3:
      return fn(integral_constant<int64_t, 3>{});
    case 4:
      return fn(integral_constant<int64_t, 4>{});
    case 5:
      return fn(integral_constant<int64_t, 5>{});
    case 7:
      return fn(integral_constant<int64_t, 7>{});
    case 9:
      return fn(integral_constant<int64_t, 9>{});
    case 27:
      return fn(integral_constant<int64_t, 27>{});
    default:
      return fn(integral_constant<int64_t, 0>{});
  }
}

void taps_row(const int8_t* in, uint8_t* o, int64_t c, int64_t k, int64_t tap_stride,
              uint8_t flip) {
  with_taps(k, [&](auto fixed) {
    if constexpr (fixed.value == 0) {
      taps_row_any(in, o, c, k, tap_stride, flip);
    } else {
      taps_row_fixed<fixed.value>(in, o, c, tap_stride, flip);
    }
  });
}

// Rows of kFewPositions positions or fewer, or of fewer positions than a block and many
// channels (weights [C_out, C_in, *k]): [C, L] -> [L, C] row by row with taps_row.
constexpr int64_t kFewPositions = 4;
bool by_rows(int64_t c, int64_t l) { return l <= kFewPositions || (l < kBlock && c >= kWideC); }

at::Tensor int8_channels_last_cpu(const at::Tensor& x, bool to_uint8) {
  MMDAQ_CHECK(x.scalar_type() == at::kChar, "int8_channels_last: x must be int8, but got ",
              x.scalar_type());
  MMDAQ_CHECK(x.dim() >= 3 && x.dim() <= 5,
              "int8_channels_last: x must be [N, C, *S] with 1 to 3 spatial dims, but got shape ",
              x.sizes());
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t l = c == 0 || n == 0 ? 0 : x.numel() / (n * c);
  // Strides of [N, C, *S] stored as [N, *S, C].
  std::vector<int64_t> strides(x.dim());
  strides[1] = 1;
  int64_t step = c;
  for (int64_t d = x.dim() - 1; d >= 2; --d) {
    strides[d] = step;
    step *= x.size(d);
  }
  strides[0] = step;
  auto out = at::empty_strided(x.sizes(), strides, x.options());
  const uint8_t flip = to_uint8 ? 0x80u : 0x00u;
  if (to_uint8) out = out.view(at::kByte);
  if (x.numel() == 0) return out;
  if (by_rows(c, l) && x.is_contiguous()) {
    // Few positions (the taps of a weight): whole samples in wide channel blocks (the
    // 16 x 16 blocks below would be mostly empty).
    const int8_t* xp = x.data_ptr<int8_t>();
    uint8_t* op = static_cast<uint8_t*>(out.data_ptr());
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(l * c, 1));
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; ++s) taps_row(xp + s * c * l, op + s * l * c, c, l, c, flip);
    });
    return out;
  }
  const auto xc = x.contiguous();
  const int8_t* xp = xc.data_ptr<int8_t>();
  uint8_t* op = static_cast<uint8_t*>(out.data_ptr());
  // 64 positions per task: each channel plane is read in whole cache lines, and a task
  // touches each page once (16-position tasks read from a new page per channel: TLB misses).
  constexpr int64_t kTileL = 64;
  const int64_t tiles_l = (l + kTileL - 1) / kTileL;
  at::parallel_for(0, n * tiles_l, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t s = t / tiles_l, t0 = (t % tiles_l) * kTileL;
      const int64_t t1 = std::min(l, t0 + kTileL);
      const int8_t* in = xp + s * c * l;
      uint8_t* o = op + s * l * c;
      for (int64_t c0 = 0; c0 < c; c0 += kBlock) {
        const int64_t c1 = std::min(c, c0 + kBlock);
        for (int64_t l0 = t0; l0 < t1; l0 += kBlock) {
          const int64_t l1 = std::min(t1, l0 + kBlock);
          if (l1 - l0 == kBlock && c1 - c0 == kBlock) {
            full_block(in, o, c, l, l0, c0, flip);
            continue;
          }
          edge_block(in, o, c, l, l0, l1 - l0, c0, c1 - c0, flip);
        }
      }
    }
  });
  return out;
}

// The weight of the input gradient as a convolution of G_Y (stride 1, one group): w [C_out, C_in,
// *k] -> w_t [C_in, C_out, *k] with w_t[i, o, j] = w[o, i, K - 1 - j] (flipped taps), stored
// [*k, C_out, C_in]: the GEMM operand of the im2col path is then a view.
at::Tensor int8_transposed_weight_cpu(const at::Tensor& w) {
  MMDAQ_CHECK(w.scalar_type() == at::kChar, "int8_transposed_weight: w must be int8, but got ",
              w.scalar_type());
  MMDAQ_CHECK(w.dim() >= 3 && w.dim() <= 5,
              "int8_transposed_weight: w must be [C_out, C_in, *k] with 1 to 3 spatial dims, "
              "but got shape ",
              w.sizes());
  const int64_t c_out = w.size(0), c_in = w.size(1);
  int64_t taps = 1;
  for (int64_t d = 2; d < w.dim(); ++d) taps *= w.size(d);
  std::vector<int64_t> sizes = w.sizes().vec();
  std::swap(sizes[0], sizes[1]);
  // Strides of [C_in, C_out, *k] stored [*k, C_out, C_in].
  std::vector<int64_t> strides(w.dim());
  strides[0] = 1;
  strides[1] = c_in;
  int64_t step = c_in * c_out;
  for (int64_t d = w.dim() - 1; d >= 2; --d) {
    strides[d] = step;
    step *= sizes[d];
  }
  auto out = at::empty_strided(sizes, strides, w.options());
  if (out.numel() == 0) return out;
  const auto wc = w.contiguous();
  const int8_t* wp = wc.data_ptr<int8_t>();
  uint8_t* op = reinterpret_cast<uint8_t*>(out.data_ptr<int8_t>());
  // Row o of w ([C_in, K]) goes to the runs out[K - 1 - t, o, :] (flipping every spatial dim
  // reverses the flat tap index): tap t at o * C_in + (K - 1 - t) * C_out * C_in.
  const int64_t plane = c_out * c_in;
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(taps * c_in, 1));
  at::parallel_for(0, c_out, grain, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o)
      taps_row(wp + o * c_in * taps, op + o * c_in + (taps - 1) * plane, c_in, taps, -plane, 0);
  });
  return out;
}

// Whether x [N, C, *S] is stored densely as [N, *S, C].
bool dense_channels_last(const at::Tensor& x) {
  if (x.stride(1) != 1 && x.size(1) != 1) return false;
  int64_t step = x.size(1);
  for (int64_t d = x.dim() - 1; d >= 2; --d) {
    if (x.stride(d) != step && x.size(d) != 1) return false;
    step *= x.size(d);
  }
  return x.stride(0) == step || x.size(0) == 1;
}

// Convolution arguments over 3 spatial dims (the missing leading ones of size 1).
struct Geometry3 {
  std::array<int64_t, 3> size{1, 1, 1}, kernel{1, 1, 1}, stride{1, 1, 1}, padding{0, 0, 0},
      dilation{1, 1, 1}, out{1, 1, 1};
};

Geometry3 im2col_geometry(const at::Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  MMDAQ_CHECK(x.scalar_type() == at::kChar, "int8_im2col: x must be int8, but got ",
              x.scalar_type());
  MMDAQ_CHECK(x.dim() >= 3 && x.dim() <= 5,
              "int8_im2col: x must be [N, C, *S] with 1 to 3 spatial dims, but got shape ",
              x.sizes());
  const int64_t nd = x.dim() - 2;
  MMDAQ_CHECK(
      static_cast<int64_t>(kernel.size()) == nd && static_cast<int64_t>(stride.size()) == nd &&
          static_cast<int64_t>(padding.size()) == nd && static_cast<int64_t>(dilation.size()) == nd,
      "int8_im2col: kernel, stride, padding and dilation need one value per spatial dim (", nd,
      "), but got ", kernel, ", ", stride, ", ", padding, ", ", dilation);
  MMDAQ_CHECK(groups >= 1 && x.size(1) % groups == 0, "int8_im2col: groups (", groups,
              ") must be positive and divide the channels (", x.size(1), ")");
  Geometry3 g;
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t j = 3 - nd + i;
    MMDAQ_CHECK(kernel[i] >= 1 && stride[i] >= 1 && dilation[i] >= 1 && padding[i] >= 0,
                "int8_im2col: kernel, stride and dilation must be positive and padding not "
                "negative, but got ",
                kernel, ", ", stride, ", ", dilation, ", ", padding);
    g.size[j] = x.size(2 + i);
    g.kernel[j] = kernel[i];
    g.stride[j] = stride[i];
    g.padding[j] = padding[i];
    g.dilation[j] = dilation[i];
    g.out[j] = (g.size[j] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) / stride[i] + 1;
    MMDAQ_CHECK(g.size[j] + 2 * padding[i] >= dilation[i] * (kernel[i] - 1) + 1,
                "int8_im2col: the kernel (", kernel, ", dilation ", dilation,
                ") is larger than the padded input ", x.sizes(), " (padding ", padding, ")");
  }
  return g;
}

// Columns of output positions [begin, end): per position, per group and tap, a run of Cg codes
// copied from the channels-last input, or zeros where the tap is in the padding.
void im2col_rows(const int8_t* __restrict__ xp, int8_t* __restrict__ cp, const Geometry3& g,
                 int64_t c, int64_t groups, int64_t begin, int64_t end) {
  const int64_t cg = c / groups;
  const int64_t l = g.out[0] * g.out[1] * g.out[2];
  const int64_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2];
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / l, o = r % l;
    const int64_t o0 = o / (g.out[1] * g.out[2]), o1 = o / g.out[2] % g.out[1], o2 = o % g.out[2];
    int8_t* dst = cp + r * c * taps;
    for (int64_t grp = 0; grp < groups; ++grp) {
      for (int64_t k0 = 0; k0 < g.kernel[0]; ++k0) {
        const int64_t p0 = o0 * g.stride[0] - g.padding[0] + k0 * g.dilation[0];
        for (int64_t k1 = 0; k1 < g.kernel[1]; ++k1) {
          const int64_t p1 = o1 * g.stride[1] - g.padding[1] + k1 * g.dilation[1];
          for (int64_t k2 = 0; k2 < g.kernel[2]; ++k2, dst += cg) {
            const int64_t p2 = o2 * g.stride[2] - g.padding[2] + k2 * g.dilation[2];
            if (p0 < 0 || p0 >= g.size[0] || p1 < 0 || p1 >= g.size[1] || p2 < 0 ||
                p2 >= g.size[2]) {
              std::memset(dst, 0, cg);
              continue;
            }
            const int64_t pos = ((n * g.size[0] + p0) * g.size[1] + p1) * g.size[2] + p2;
            std::memcpy(dst, xp + pos * c + grp * cg, cg);
          }
        }
      }
    }
  }
}

at::Tensor int8_im2col_cpu(const at::Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Geometry3 g = im2col_geometry(x, kernel, stride, padding, dilation, groups);
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t rows = n * g.out[0] * g.out[1] * g.out[2];
  const int64_t width = c * g.kernel[0] * g.kernel[1] * g.kernel[2];
  auto cols = at::empty({rows, width}, x.options());
  if (cols.numel() == 0) return cols;
  const auto xcl = dense_channels_last(x) ? x : int8_channels_last_cpu(x, false);
  const int8_t* xp = xcl.data_ptr<int8_t>();
  int8_t* cp = cols.data_ptr<int8_t>();
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(width, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    im2col_rows(xp, cp, g, c, groups, begin, end);
  });
  return cols;
}

// Row o of int32_to_weight: [K, C] int32 -> [C, K] float times s. K a compile-time constant
// for the common kernels (with_taps), so that the per-channel loop over the taps unrolls.
template <int64_t K>
MMDAQ_CPU_CLONES void weight_row_fixed(const int32_t* __restrict__ a, float* __restrict__ o,
                                       int64_t c, float s) {
  for (int64_t j = 0; j < c; ++j) {
    for (int64_t kk = 0; kk < K; ++kk) o[j * K + kk] = static_cast<float>(a[kk * c + j]) * s;
  }
}

MMDAQ_CPU_CLONES void weight_row_any(const int32_t* __restrict__ a, float* __restrict__ o,
                                     int64_t k, int64_t c, float s) {
  for (int64_t j = 0; j < c; ++j) {
    for (int64_t kk = 0; kk < k; ++kk) o[j * k + kk] = static_cast<float>(a[kk * c + j]) * s;
  }
}

void weight_row(const int32_t* a, float* o, int64_t k, int64_t c, float s) {
  with_taps(k, [&](auto fixed) {
    if constexpr (fixed.value == 0) {
      weight_row_any(a, o, k, c, s);
    } else {
      weight_row_fixed<fixed.value>(a, o, c, s);
    }
  });
}

at::Tensor int32_to_weight_cpu(const at::Tensor& acc, const at::Tensor& scale,
                               at::IntArrayRef weight_shape) {
  MMDAQ_CHECK(acc.scalar_type() == at::kInt && acc.dim() == 2,
              "int32_to_weight: acc must be int32 [C_out, K * C_in], but got ", acc.scalar_type(),
              " of shape ", acc.sizes());
  MMDAQ_CHECK(weight_shape.size() >= 2,
              "int32_to_weight: weight_shape must be [C_out, C_in, *k], but got ", weight_shape);
  int64_t numel = 1;
  for (const int64_t d : weight_shape) numel *= d;
  const int64_t r = weight_shape[0], c = weight_shape[1];
  MMDAQ_CHECK(acc.size(0) == r && acc.numel() == numel, "int32_to_weight: acc ", acc.sizes(),
              " does not hold a weight of shape ", weight_shape);
  MMDAQ_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == r,
              "int32_to_weight: scale must be float32 with C_out = ", r, " values, but got ",
              scale.scalar_type(), " with ", scale.numel());
  auto out = at::empty(weight_shape, acc.options().dtype(at::kFloat));
  if (numel == 0) return out;
  const int64_t k = numel / (r * c);
  const auto ac = acc.contiguous();
  const auto sc = scale.contiguous();
  const int32_t* ap = ac.data_ptr<int32_t>();
  const float* sp = sc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(k * c, 1));
  at::parallel_for(0, r, grain, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) weight_row(ap + o * k * c, op + o * k * c, k, c, sp[o]);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmdaq, CPU, m) {
  m.impl("int8_channels_last", &int8_channels_last_cpu);
  m.impl("int8_transposed_weight", &int8_transposed_weight_cpu);
  m.impl("int8_im2col", &int8_im2col_cpu);
  m.impl("int32_to_weight", &int32_to_weight_cpu);
}
