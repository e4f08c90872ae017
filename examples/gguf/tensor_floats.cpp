// Reading GGUF weights as floats for scoring. The block decoders follow the
// block layouts of ggml-common.h and the arithmetic of ggml-quants.c's
// dequantize_row_* (same operations in the same order, so the values agree).
#include "gguf/tensor_floats.hpp"

#include <bit>
#include <cstring>

namespace gguf {
namespace {

using nashprune::ggml_type;
using byte_ptr = const std::uint8_t*;

float half_at(byte_ptr p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

// Q4_0: fp16 d, 16 bytes of nibbles; low nibbles are values 0..15, high 16..31; x = (q - 8) d.
void q4_0(byte_ptr b, float* y) {
  const float d = half_at(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((b[2 + j] & 0x0F) - 8) * d;
    y[j + 16] = static_cast<float>((b[2 + j] >> 4) - 8) * d;
  }
}

// Q4_1: fp16 d, fp16 m, 16 bytes of nibbles; x = q d + m.
void q4_1(byte_ptr b, float* y) {
  const float d = half_at(b);
  const float m = half_at(b + 2);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(b[4 + j] & 0x0F) * d + m;
    y[j + 16] = static_cast<float>(b[4 + j] >> 4) * d + m;
  }
}

// The 5-bit values of Q5_0 / Q5_1: nibbles plus a fifth bit from the 32-bit qh.
void five_bit_values(byte_ptr qh_bytes, byte_ptr qs, int* q) {
  std::uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 16; ++j) {
    q[j] = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) << 4) & 0x10);
    q[j + 16] = (qs[j] >> 4) | static_cast<int>((qh >> (j + 12)) & 0x10);
  }
}

// Q5_0: fp16 d, qh, 16 bytes of nibbles; x = (q - 16) d.
void q5_0(byte_ptr b, float* y) {
  const float d = half_at(b);
  int q[32];
  five_bit_values(b + 2, b + 6, q);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(q[j] - 16) * d;
}

// Q5_1: fp16 d, fp16 m, qh, 16 bytes of nibbles; x = q d + m.
void q5_1(byte_ptr b, float* y) {
  const float d = half_at(b);
  const float m = half_at(b + 2);
  int q[32];
  five_bit_values(b + 4, b + 8, q);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(q[j]) * d + m;
}

// Q8_0: fp16 d, 32 int8; x = q d.
void q8_0(byte_ptr b, float* y) {
  const float d = half_at(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<std::int8_t>(b[2 + j])) * d;
}

// Q2_K: 16 bytes of 4-bit scale | 4-bit min, 64 bytes of 2-bit values, fp16 d, fp16 dmin;
// 16 sub-blocks of 16: x = d sc q - dmin m.
void q2_k(byte_ptr b, float* y) {
  const byte_ptr scales = b;
  byte_ptr q = b + 16;
  const float d = half_at(b + 80);
  const float min = half_at(b + 82);
  int is = 0;
  for (int n = 0; n < 256; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const std::uint8_t sc = scales[is++];
        const float dl = d * static_cast<float>(sc & 0xF);
        const float ml = min * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
      }
    }
    q += 32;
  }
}

// Q3_K: 32 bytes of high bits, 64 bytes of 2-bit values, 12 bytes packing 16
// 6-bit scales, fp16 d; x = d (sc - 32) (q - (high bit ? 0 : 4)).
void q3_k(byte_ptr b, float* y) {
  const byte_ptr hm = b;
  byte_ptr q = b + 32;
  const float d_all = half_at(b + 108);
  // Unpack the scales as ggml does: low nibbles from bytes 0..7, top two bits from bytes 8..11.
  std::uint32_t aux[4];
  std::memcpy(aux, b + 96, 12);
  constexpr std::uint32_t kmask1 = 0x03030303;
  constexpr std::uint32_t kmask2 = 0x0f0f0f0f;
  const std::uint32_t tmp = aux[2];
  aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
  aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
  aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
  aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
  std::int8_t scales[16];
  std::memcpy(scales, aux, 16);
  int is = 0;
  std::uint8_t m = 1;
  for (int n = 0; n < 256; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d_all * static_cast<float>(scales[is++] - 32);
        for (int l = 0; l < 16; ++l) {
          const int k = l + 16 * half;
          *y++ = dl * static_cast<float>(((q[k] >> shift) & 3) - ((hm[k] & m) != 0 ? 0 : 4));
        }
      }
      m = static_cast<std::uint8_t>(m << 1);
    }
    q += 32;
  }
}

// The 6-bit scale and min of sub-block j of Q4_K / Q5_K (ggml's get_scale_min_k4).
void scale_min_k4(int j, byte_ptr q, std::uint8_t& d, std::uint8_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = static_cast<std::uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K and Q5_K: fp16 d, fp16 dmin, 12 scale bytes, [Q5_K: 32 bytes of fifth
// bits], 128 bytes of nibbles; 8 sub-blocks of 32: x = d sc q - dmin m.
void q45_k(byte_ptr b, float* y, bool five_bits) {
  const float d = half_at(b);
  const float min = half_at(b + 2);
  const byte_ptr scales = b + 4;
  const byte_ptr qh = b + 16;
  byte_ptr ql = five_bits ? b + 48 : b + 16;
  int is = 0;
  std::uint8_t u1 = 1;
  std::uint8_t u2 = 2;
  for (int j = 0; j < 256; j += 64) {
    std::uint8_t sc;
    std::uint8_t m;
    scale_min_k4(is + 0, scales, sc, m);
    const float d1 = d * static_cast<float>(sc);
    const float m1 = min * static_cast<float>(m);
    scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * static_cast<float>(sc);
    const float m2 = min * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      const int high = five_bits && (qh[l] & u1) != 0 ? 16 : 0;
      *y++ = d1 * static_cast<float>((ql[l] & 0xF) + high) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      const int high = five_bits && (qh[l] & u2) != 0 ? 16 : 0;
      *y++ = d2 * static_cast<float>((ql[l] >> 4) + high) - m2;
    }
    ql += 32;
    is += 2;
    u1 = static_cast<std::uint8_t>(u1 << 2);
    u2 = static_cast<std::uint8_t>(u2 << 2);
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, fp16 d;
// 16 sub-blocks of 16: x = d sc (q - 32).
void q6_k(byte_ptr b, float* y) {
  byte_ptr ql = b;
  byte_ptr qh = b + 128;
  const auto* sc = reinterpret_cast<const std::int8_t*>(b + 192);
  const float d = half_at(b + 208);
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

using block_decoder = void (*)(byte_ptr, float*);

// The decoder of one block of `type` (nullptr: not a block format we decode).
block_decoder decoder_of(ggml_type type) {
  switch (type) {
    case ggml_type::q4_0: return q4_0;
    case ggml_type::q4_1: return q4_1;
    case ggml_type::q5_0: return q5_0;
    case ggml_type::q5_1: return q5_1;
    case ggml_type::q8_0: return q8_0;
    case ggml_type::q2_k: return q2_k;
    case ggml_type::q3_k: return q3_k;
    case ggml_type::q4_k: return [](byte_ptr b, float* y) { q45_k(b, y, false); };
    case ggml_type::q5_k: return [](byte_ptr b, float* y) { q45_k(b, y, true); };
    case ggml_type::q6_k: return q6_k;
    default: return nullptr;
  }
}

}  // namespace

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000U) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1FU;
  std::uint32_t mantissa = h & 0x3FFU;
  std::uint32_t bits = 0;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000U | (mantissa << 13);  // Inf / NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa != 0) {  // subnormal: normalise
    exponent = 113;
    while ((mantissa & 0x400U) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FFU) << 13);
  } else {
    bits = sign;
  }
  return std::bit_cast<float>(bits);
}

float bf16_to_float(std::uint16_t h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }

bool can_dequantize(ggml_type type) {
  return type == ggml_type::f32 || type == ggml_type::f16 || type == ggml_type::bf16 || decoder_of(type) != nullptr;
}

void dequantize(ggml_type type, std::span<const std::byte> in, std::span<float> out) {
  const auto& traits = nashprune::traits_of(type);
  if (!can_dequantize(type)) {
    throw std::invalid_argument("gguf::dequantize: cannot decode " + std::string(traits.name));
  }
  const auto values = static_cast<std::int64_t>(out.size());
  if (values % traits.block_size != 0 ||
      static_cast<std::int64_t>(in.size()) != values / traits.block_size * traits.type_size) {
    throw std::invalid_argument("gguf::dequantize: " + std::to_string(in.size()) + " bytes of " + std::string(traits.name) +
                                " do not hold " + std::to_string(values) + " values");
  }
  const auto* bytes = reinterpret_cast<byte_ptr>(in.data());
  switch (type) {
    case ggml_type::f32:
      std::memcpy(out.data(), bytes, out.size() * sizeof(float));
      return;
    case ggml_type::f16:
    case ggml_type::bf16:
      for (std::size_t i = 0; i < out.size(); ++i) {
        std::uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        out[i] = type == ggml_type::f16 ? half_to_float(h) : bf16_to_float(h);
      }
      return;
    default:
      break;
  }
  const block_decoder decode = decoder_of(type);
  const auto blocks = static_cast<std::size_t>(values / traits.block_size);
  for (std::size_t k = 0; k < blocks; ++k) {
    decode(bytes + k * static_cast<std::size_t>(traits.type_size), out.data() + k * static_cast<std::size_t>(traits.block_size));
  }
}

float_matrix::float_matrix(const tensor_view& t) : rows_(t.rows()), cols_(t.dims[0]) {
  if (t.type == ggml_type::f32 && reinterpret_cast<std::uintptr_t>(t.data.data()) % alignof(float) == 0) {
    data_ = reinterpret_cast<const float*>(t.data.data());
    return;
  }
  if (!can_dequantize(t.type)) {
    throw std::invalid_argument("tensor '" + t.name + "' is " + std::string(nashprune::traits_of(t.type).name) +
                                ": weight scores read f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0 and q2_K..q6_K "
                                "(use --score activation with --calibration or --imatrix)");
  }
  owned_.resize(static_cast<std::size_t>(t.elements()));
  dequantize(t.type, t.data, owned_);
  data_ = owned_.data();
}

}  // namespace gguf
