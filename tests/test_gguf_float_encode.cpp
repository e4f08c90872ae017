// float_encode.hpp: every finite half and bfloat16 survives decode then encode,
// values between two neighbours go to the nearer (ties to the even one), overflow
// becomes infinity, and encode_floats writes the bytes decode reads back.
#include <gtest/gtest.h>

#include <gguf/float_encode.hpp>
#include <gguf/tensor_floats.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

TEST(FloatEncode, EveryHalfAndBfloat16RoundTrips) {
  for (std::uint32_t bits = 0; bits < 0x10000U; ++bits) {
    const auto h = static_cast<std::uint16_t>(bits);
    const float f = gguf::half_to_float(h);
    if (!std::isnan(f)) {
      EXPECT_EQ(gguf::float_to_half(f), h) << bits;
    }
    const float b = gguf::bf16_to_float(h);
    if (!std::isnan(b)) {
      EXPECT_EQ(gguf::float_to_bf16(b), h) << bits;
    }
  }
  EXPECT_TRUE(std::isnan(gguf::half_to_float(gguf::float_to_half(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(gguf::bf16_to_float(gguf::float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(FloatEncode, RoundsToNearestTiesToEven) {
  // Between neighbouring halves a < b (a normal, a subnormal, and the step into the next binade).
  for (const std::uint16_t a : {std::uint16_t{0x3C00}, std::uint16_t{0x3C01}, std::uint16_t{0x0003}, std::uint16_t{0x03FF}, std::uint16_t{0x3BFF}}) {
    const auto b = static_cast<std::uint16_t>(a + 1);
    const float lo = gguf::half_to_float(a);
    const float hi = gguf::half_to_float(b);
    const float mid = lo + (hi - lo) / 2;
    EXPECT_EQ(gguf::float_to_half(std::nextafter(mid, lo)), a);
    EXPECT_EQ(gguf::float_to_half(std::nextafter(mid, hi)), b);
    EXPECT_EQ(gguf::float_to_half(mid), (a & 1U) == 0 ? a : b);
  }
  EXPECT_EQ(gguf::float_to_half(1e6F), 0x7C00);
  EXPECT_EQ(gguf::float_to_half(-1e6F), 0xFC00);
  EXPECT_EQ(gguf::float_to_half(1e-9F), 0x0000);
  EXPECT_EQ(gguf::float_to_bf16(1.0F + 0x1p-8F), 0x3F80);  // tie: to the even 1.0
  EXPECT_EQ(gguf::float_to_bf16(1.0F + 0x1p-8F + 0x1p-20F), 0x3F81);
}

TEST(FloatEncode, EncodeFloatsWritesWhatDequantizeReads) {
  const std::vector<float> values{1.0F, -2.5F, 0.125F, 65504.0F, 3.0e-5F};
  for (const auto type : {nashprune::ggml_type::f32, nashprune::ggml_type::f16, nashprune::ggml_type::bf16}) {
    const auto bytes = gguf::encode_floats(type, values);
    std::vector<float> back(values.size());
    gguf::dequantize(type, bytes, back);
    for (std::size_t i = 0; i < values.size(); ++i) EXPECT_NEAR(back[i], values[i], std::abs(values[i]) * 1e-2F) << i;
  }
  EXPECT_THROW((void)gguf::encode_floats(nashprune::ggml_type::q8_0, values), std::invalid_argument);
}

}  // namespace
