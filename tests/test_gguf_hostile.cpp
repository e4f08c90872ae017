// GGUF reader on malformed and hostile input: every problem is a format_error
// naming the file offset; nothing crashes, hangs or allocates absurdly (the
// sanitize preset runs these under ASan/UBSan).
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "gguf_test_files.hpp"

using gguf::value;
using gguf::value_type;
using nashprune::ggml_type;

namespace {

std::string parse_error(const std::vector<std::byte>& bytes) {
  try {
    (void)gguf::reader::parse(bytes, "test.gguf");
  } catch (const gguf::format_error& e) {
    return e.what();
  }
  return "";
}

void expect_error(const std::vector<std::byte>& bytes, const std::string& offset, const std::string& words) {
  const std::string message = parse_error(bytes);
  ASSERT_FALSE(message.empty()) << "expected a format_error mentioning '" << words << "'";
  EXPECT_NE(message.find("test.gguf: offset " + offset + ":"), std::string::npos) << message;
  EXPECT_NE(message.find(words), std::string::npos) << message;
}

template <typename T>
void poke(std::vector<std::byte>& bytes, std::size_t at, T v) {
  std::memcpy(bytes.data() + at, &v, sizeof v);
}

// Header of a file with no metadata and `tensors` entries written by hand.
std::vector<std::byte> header(std::uint64_t tensor_count, std::uint64_t kv_count) {
  std::vector<std::byte> out;
  for (char c : std::string("GGUF")) out.push_back(static_cast<std::byte>(c));
  gguf::encode_pod<std::uint32_t>(out, 3);
  gguf::encode_pod(out, tensor_count);
  gguf::encode_pod(out, kv_count);
  return out;
}

void add_tensor_entry(std::vector<std::byte>& out, const std::string& name, std::vector<std::uint64_t> dims,
                      std::uint32_t type, std::uint64_t offset) {
  gguf::encode_string(out, name);
  gguf::encode_pod<std::uint32_t>(out, static_cast<std::uint32_t>(dims.size()));
  for (auto d : dims) gguf::encode_pod(out, d);
  gguf::encode_pod(out, type);
  gguf::encode_pod(out, offset);
}

// A file whose tensor table is given; the data section holds `data_bytes` zeros.
std::vector<std::byte> with_tensors(const std::vector<std::tuple<std::string, std::vector<std::uint64_t>, std::uint32_t, std::uint64_t>>& entries,
                                    std::uint64_t data_bytes) {
  auto out = header(entries.size(), 0);
  for (const auto& [name, dims, type, offset] : entries) add_tensor_entry(out, name, dims, type, offset);
  out.resize(gguf::align_up(out.size(), 32) + data_bytes, std::byte{0});
  return out;
}

std::vector<std::byte> with_one_value(const std::string& key, std::uint32_t type, const std::vector<std::byte>& payload) {
  auto out = header(0, 1);
  gguf::encode_string(out, key);
  gguf::encode_pod(out, type);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

}  // namespace

TEST(GgufHostile, SmallFileParses) {
  const auto bytes = gguf_test::small_file();
  const auto r = gguf::reader::parse(bytes, "test.gguf");
  EXPECT_EQ(r.tensors().size(), 3U);
  EXPECT_EQ(r.find("tokens")->as_array().size(), 3U);
}

TEST(GgufHostile, TruncationAtEveryOffsetIsAnError) {
  const auto bytes = gguf_test::small_file();
  const auto whole = gguf::reader::parse(bytes, "test.gguf");
  std::uint64_t data_end = 0;
  for (const auto& t : whole.tensors()) data_end = std::max(data_end, whole.data_offset() + t.offset + t.bytes());
  ASSERT_LT(data_end, bytes.size()) << "the last tensor is followed by padding";
  for (std::size_t n = data_end; n <= bytes.size(); ++n) {
    EXPECT_NO_THROW((void)gguf::reader::parse(std::span(bytes).first(n), "test.gguf")) << "padding after the last tensor is optional";
  }
  for (std::size_t n = 0; n < data_end; ++n) {
    const std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string message = parse_error(prefix);
    ASSERT_FALSE(message.empty()) << "a file cut at " << n << " of " << bytes.size() << " bytes parsed";
    EXPECT_NE(message.find("test.gguf: offset "), std::string::npos) << message;
  }
}

TEST(GgufHostile, EveryByteFlipIsParsedOrRejectedCleanly) {
  const auto bytes = gguf_test::small_file();
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (std::byte mask : {std::byte{0x01}, std::byte{0x80}, std::byte{0xFF}}) {
      auto changed = bytes;
      changed[i] ^= mask;
      try {
        const auto r = gguf::reader::parse(changed, "test.gguf");
        for (const auto& t : r.tensors()) {
          ASSERT_GE(t.data.data(), changed.data());
          ASSERT_LE(t.data.data() + t.data.size(), changed.data() + changed.size());
        }
      } catch (const gguf::format_error&) {
      }
    }
  }
}

TEST(GgufHostile, BadMagicAndVersion) {
  auto bytes = gguf_test::small_file();
  bytes[0] = std::byte{'X'};
  expect_error(bytes, "0", "bad magic");
  bytes = gguf_test::small_file();
  poke<std::uint32_t>(bytes, 4, 1);
  expect_error(bytes, "4", "unsupported GGUF version 1");
}

TEST(GgufHostile, AbsurdCounts) {
  expect_error(header(std::numeric_limits<std::uint64_t>::max(), 0), "8", "tensor count");
  expect_error(header(0, std::uint64_t{1} << 60), "16", "metadata count");
  std::vector<std::byte> huge_string;
  gguf::encode_pod<std::uint64_t>(huge_string, std::numeric_limits<std::uint64_t>::max());
  expect_error(with_one_value("k", 8, huge_string), "37", "string length");
  auto long_key = header(0, 1);
  gguf::encode_pod<std::uint64_t>(long_key, std::uint64_t{1} << 40);
  long_key.resize(long_key.size() + 16);
  expect_error(long_key, "24", "metadata key length");
  std::vector<std::byte> huge_array;
  gguf::encode_pod<std::uint32_t>(huge_array, 0);
  gguf::encode_pod<std::uint64_t>(huge_array, std::uint64_t{1} << 62);
  expect_error(with_one_value("k", 9, huge_array), "41", "array of 4611686018427387904 UINT8 cannot fit");
}

TEST(GgufHostile, BadValues) {
  expect_error(with_one_value("k", 13, {}), "33", "unknown value type 13");
  expect_error(with_one_value("k", 7, {std::byte{2}}), "37", "BOOL value 2");
  std::vector<std::byte> bad_element;
  gguf::encode_pod<std::uint32_t>(bad_element, 99);
  expect_error(with_one_value("k", 9, bad_element), "37", "unknown value type 99");
  // Arrays of arrays nested 17 deep, each holding one array.
  std::vector<std::byte> deep;
  for (int i = 0; i < 17; ++i) {
    gguf::encode_pod<std::uint32_t>(deep, 9);
    gguf::encode_pod<std::uint64_t>(deep, 1);
  }
  gguf::encode_pod<std::uint32_t>(deep, 0);
  gguf::encode_pod<std::uint64_t>(deep, 0);
  EXPECT_NE(parse_error(with_one_value("k", 9, deep)).find("nested deeper than 16"), std::string::npos);
  auto duplicate = header(0, 2);
  for (int i = 0; i < 2; ++i) {
    gguf::encode_string(duplicate, "same");
    gguf::encode_pod<std::uint32_t>(duplicate, 4);
    gguf::encode_pod<std::uint32_t>(duplicate, 1);
  }
  expect_error(duplicate, "44", "duplicate metadata key 'same'");
}

TEST(GgufHostile, BadAlignment) {
  for (std::uint32_t a : {0U, 3U, 48U}) {
    std::vector<std::byte> payload;
    gguf::encode_pod(payload, a);
    expect_error(with_one_value("general.alignment", 4, payload), "24", "is not a power of two");
  }
  std::vector<std::byte> wide;
  gguf::encode_pod<std::uint64_t>(wide, 32);
  expect_error(with_one_value("general.alignment", 10, wide), "24", "must be UINT32");
}

TEST(GgufHostile, BadTensorEntries) {
  constexpr std::uint32_t f32 = 0;
  constexpr std::uint32_t q8_0 = 8;
  expect_error(with_tensors({{"t", {}, f32, 0}}, 64), "33", "has 0 dimensions");
  expect_error(with_tensors({{"t", {1, 1, 1, 1, 1}, f32, 0}}, 64), "33", "has 5 dimensions");
  expect_error(with_tensors({{"t", {4, 0}, f32, 0}}, 64), "45", "dimension 1 = 0");
  expect_error(with_tensors({{"t", {std::uint64_t{1} << 40, std::uint64_t{1} << 40}, f32, 0}}, 64), "45",
               "element count overflow");
  expect_error(with_tensors({{"t", {4}, 31, 0}}, 64), "45", "unknown ggml type 31");
  expect_error(with_tensors({{"t", {48}, q8_0, 0}}, 64), "33", "not a multiple of the q8_0 block size 32");
  expect_error(with_tensors({{"t", {4}, f32, 8}}, 64), "49", "not a multiple of the alignment");
  expect_error(with_tensors({{"t", {std::uint64_t{1} << 40}, f32, 0}}, 64), "33", "more than the whole file");
  expect_error(with_tensors({{"t", {4}, f32, 0}, {"t", {4}, f32, 32}}, 64), "57", "duplicate tensor name 't'");
}

TEST(GgufHostile, TensorsOutOfRangeOrOverlapping) {
  constexpr std::uint32_t f32 = 0;
  expect_error(with_tensors({{"t", {16}, f32, 0}}, 63), "24", "extends past the end of the file");
  expect_error(with_tensors({{"t", {4}, f32, std::uint64_t{1} << 63}}, 64), "24", "extends past the end");
  expect_error(with_tensors({{"a", {16}, f32, 0}, {"b", {16}, f32, 32}}, 128), "57", "overlaps tensor 'a'");
  // Overlap detected whatever the table order.
  expect_error(with_tensors({{"b", {16}, f32, 32}, {"a", {16}, f32, 0}}, 128), "24", "overlaps tensor 'a'");
  // Gaps are allowed by the format (llama.cpp insists on none; our writer never leaves any).
  EXPECT_EQ(parse_error(with_tensors({{"a", {4}, f32, 0}, {"b", {4}, f32, 64}}, 128)), "");
}

TEST(GgufHostile, OpenReportsMissingAndEmptyFiles) {
  gguf_test::scratch_dir dir;
  EXPECT_THROW((void)gguf::reader::open(dir / "absent.gguf"), std::invalid_argument);
  { std::ofstream(dir / "empty.gguf"); }
  try {
    (void)gguf::reader::open(dir / "empty.gguf");
    FAIL();
  } catch (const gguf::format_error& e) {
    EXPECT_NE(std::string(e.what()).find("offset 0: truncated magic"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)gguf::reader::open(dir.path), std::invalid_argument);
}
