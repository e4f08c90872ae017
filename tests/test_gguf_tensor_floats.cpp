// gguf::dequantize and float_matrix (examples/gguf/tensor_floats.hpp) on blocks
// built by hand; tests/llama/test_llama_dequantize.cpp compares every type with
// ggml's own decoder.
#include <gguf/tensor_floats.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

using nashprune::ggml_type;

namespace {

constexpr std::uint16_t half_one = 0x3C00;   // 1.0
constexpr std::uint16_t half_half = 0x3800;  // 0.5
constexpr std::uint16_t half_minus_two = 0xC000;  // -2.0

void put_half(std::vector<std::byte>& b, std::size_t at, std::uint16_t h) { std::memcpy(b.data() + at, &h, 2); }

std::vector<float> decode(ggml_type type, const std::vector<std::byte>& bytes, std::size_t n) {
  std::vector<float> out(n);
  gguf::dequantize(type, bytes, out);
  return out;
}

}  // namespace

TEST(GgufTensorFloats, HalfAndBfloat16) {
  EXPECT_EQ(gguf::half_to_float(half_one), 1.0F);
  EXPECT_EQ(gguf::half_to_float(half_minus_two), -2.0F);
  EXPECT_EQ(gguf::half_to_float(0x0001), 5.9604645e-8F);  // smallest subnormal
  EXPECT_EQ(gguf::bf16_to_float(0x3F80), 1.0F);
}

TEST(GgufTensorFloats, Q4_0LowNibblesFirstThenHigh) {
  std::vector<std::byte> b(18);
  put_half(b, 0, half_half);
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<std::byte>(j | ((15 - j) << 4));
  const auto y = decode(ggml_type::q4_0, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], static_cast<float>(j - 8) * 0.5F) << j;
    EXPECT_EQ(y[j + 16], static_cast<float>(7 - j) * 0.5F) << j;
  }
}

TEST(GgufTensorFloats, Q5_1AddsTheFifthBitAndTheMinimum) {
  std::vector<std::byte> b(24);
  put_half(b, 0, half_one);        // d
  put_half(b, 2, half_minus_two);  // m
  const std::uint32_t qh = 0x00010001U;  // bit 0: fifth bit of value 0; bit 16: of value 16
  std::memcpy(b.data() + 4, &qh, 4);
  for (int j = 0; j < 16; ++j) b[8 + j] = static_cast<std::byte>(0x21);  // low nibble 1, high nibble 2
  const auto y = decode(ggml_type::q5_1, b, 32);
  EXPECT_EQ(y[0], 17.0F - 2.0F);   // 1 | 16
  EXPECT_EQ(y[1], 1.0F - 2.0F);
  EXPECT_EQ(y[16], 18.0F - 2.0F);  // value 16 takes qh bit 16
  EXPECT_EQ(y[17], 2.0F - 2.0F);
}

TEST(GgufTensorFloats, Q8_0AndQ6_K) {
  std::vector<std::byte> q8(34);
  put_half(q8, 0, half_half);
  for (int j = 0; j < 32; ++j) q8[2 + j] = static_cast<std::byte>(static_cast<std::int8_t>(j - 16));
  const auto y8 = decode(ggml_type::q8_0, q8, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y8[j], static_cast<float>(j - 16) * 0.5F);

  // Q6_K with zero quants: every value is d * scale * (0 - 32); scale k covers values 16k..16k+15.
  std::vector<std::byte> q6(210);
  for (int k = 0; k < 16; ++k) q6[192 + k] = static_cast<std::byte>(k + 1);
  put_half(q6, 208, half_one);
  const auto y6 = decode(ggml_type::q6_k, q6, 256);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(y6[i], -32.0F * static_cast<float>(i / 16 + 1)) << i;
}

TEST(GgufTensorFloats, WrongSizesAndUndecodedTypesAreRefused) {
  std::vector<std::byte> b(18);
  std::vector<float> out(31);
  EXPECT_THROW(gguf::dequantize(ggml_type::q4_0, b, out), std::invalid_argument);
  out.resize(64);
  EXPECT_THROW(gguf::dequantize(ggml_type::q4_0, b, out), std::invalid_argument);
  EXPECT_FALSE(gguf::can_dequantize(ggml_type::iq4_nl));
  gguf::tensor_view t;
  t.name = "blk.1.ffn_down.weight";
  t.dims = {32, 1};
  t.type = ggml_type::iq4_nl;
  t.data = b;
  try {
    const gguf::float_matrix m(t);
    FAIL() << "iq4_nl was decoded";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("blk.1.ffn_down.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("iq4_nl"), std::string::npos) << e.what();
  }
}

TEST(GgufTensorFloats, F32IsReadInPlace) {
  std::array<float, 6> w{1, 2, 3, 4, 5, 6};
  gguf::tensor_view t;
  t.name = "x";
  t.dims = {3, 2};
  t.type = ggml_type::f32;
  t.data = std::as_bytes(std::span(w));
  const gguf::float_matrix m(t);
  EXPECT_EQ(m.map().data(), w.data());
  EXPECT_EQ(m.map()(1, 0), 4.0F);
}
