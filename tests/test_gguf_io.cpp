// GGUF reader/writer: round trips of every value type, alignment, streaming,
// the writer's safety rules, and the two real models bundled in examples/data.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <limits>

#include "gguf_test_files.hpp"

using gguf::value;
using gguf::value_type;
using nashprune::ggml_type;

namespace {

gguf::metadata every_value_type() {
  gguf::metadata kv;
  kv.emplace_back("u8", value::integer(value_type::uint8, 255));
  kv.emplace_back("i8", value::integer(value_type::int8, -128));
  kv.emplace_back("u16", value::integer(value_type::uint16, 65535));
  kv.emplace_back("i16", value::integer(value_type::int16, -32768));
  kv.emplace_back("u32", value::u32(std::numeric_limits<std::uint32_t>::max()));
  kv.emplace_back("i32", value::i32(std::numeric_limits<std::int32_t>::min()));
  kv.emplace_back("u64", value::u64(std::numeric_limits<std::uint64_t>::max()));
  kv.emplace_back("i64", value::integer(value_type::int64, std::numeric_limits<std::int64_t>::min()));
  kv.emplace_back("f32", value::f32(-1.5e-7F));
  kv.emplace_back("f64", value::f64(3.141592653589793));
  kv.emplace_back("true", value::boolean(true));
  kv.emplace_back("false", value::boolean(false));
  kv.emplace_back("empty string", value::string(""));
  kv.emplace_back("utf8 string", value::string("h\xC3\xA9llo \xE2\x9C\x93"));
  kv.emplace_back("empty array", value::array(value_type::int16, {}));
  kv.emplace_back("u8 array", value::int_array(value_type::uint8, {0, 1, 255}));
  kv.emplace_back("i64 array", value::int_array(value_type::int64, {-5, 7}));
  kv.emplace_back("bool array", value::array(value_type::boolean, {value::boolean(true), value::boolean(false)}));
  kv.emplace_back("f64 array", value::array(value_type::float64, {value::f64(0.25)}));
  kv.emplace_back("string array", value::string_array({"x", "", "yz"}));
  kv.emplace_back("nested", value::array(value_type::array, {value::string_array({"a"}),
                                                             value::array(value_type::uint32, {}),
                                                             value::array(value_type::array, {value::f32_array({1.0F})})}));
  return kv;
}

std::vector<gguf::tensor_spec> some_tensors() {
  return {{"f32 matrix", {16, 3}, ggml_type::f32},
          {"f16 vector", {5}, ggml_type::f16},
          {"q8_0 rows", {64, 2}, ggml_type::q8_0},
          {"q4_K 4d", {256, 1, 2, 1}, ggml_type::q4_k}};
}

void write_file(const std::filesystem::path& path, const gguf::metadata& kv, const std::vector<gguf::tensor_spec>& tensors,
                std::size_t piece = 0) {
  gguf::writer w(path, {});
  w.begin(kv, tensors);
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    const auto bytes = gguf_test::pattern_bytes(tensors[t].bytes(), t);
    if (piece == 0) {
      w.write(bytes);
    } else {
      for (std::size_t i = 0; i < bytes.size(); i += piece) {
        w.write(std::span(bytes).subspan(i, std::min(piece, bytes.size() - i)));
      }
    }
  }
  w.commit();
}

void expect_same_content(const gguf::reader& r, const gguf::metadata& kv, const std::vector<gguf::tensor_spec>& tensors) {
  ASSERT_EQ(r.metadata().size(), kv.size());
  for (std::size_t i = 0; i < kv.size(); ++i) {
    EXPECT_EQ(r.metadata()[i].first, kv[i].first);
    EXPECT_EQ(r.metadata()[i].second, kv[i].second) << kv[i].first << ": " << gguf::to_string(r.metadata()[i].second);
  }
  ASSERT_EQ(r.tensors().size(), tensors.size());
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    const auto& view = r.tensors()[t];
    EXPECT_EQ(view.name, tensors[t].name);
    EXPECT_EQ(view.dims, tensors[t].dims);
    EXPECT_EQ(view.type, tensors[t].type);
    EXPECT_EQ(view.offset % r.alignment(), 0U);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(view.data.data()) % r.alignment(), 0U) << "mmap views are aligned";
    const auto expected = gguf_test::pattern_bytes(tensors[t].bytes(), t);
    ASSERT_EQ(view.data.size(), expected.size());
    EXPECT_EQ(std::memcmp(view.data.data(), expected.data(), expected.size()), 0) << view.name;
  }
}

}  // namespace

TEST(GgufIo, EveryValueTypeRoundTrips) {
  gguf_test::scratch_dir dir;
  const auto kv = every_value_type();
  const auto tensors = some_tensors();
  write_file(dir / "all.gguf", kv, tensors);
  const auto r = gguf::reader::open(dir / "all.gguf");
  EXPECT_EQ(r.version(), 3U);
  EXPECT_EQ(r.alignment(), gguf::default_alignment);
  EXPECT_EQ(r.data_offset() % 32, 0U);
  expect_same_content(r, kv, tensors);
  EXPECT_EQ(r.find("u64")->type, value_type::uint64);
  EXPECT_EQ(r.find("i8")->as_int(), -128);
  EXPECT_EQ(r.find("nested")->as_array()[2].as_array()[0].as_array()[0].as_float(), 1.0);
}

TEST(GgufIo, FileBytesEqualTheEncodedHeaderAndPaddedData) {
  gguf_test::scratch_dir dir;
  const auto kv = every_value_type();
  const auto tensors = some_tensors();
  write_file(dir / "a.gguf", kv, tensors);
  EXPECT_EQ(gguf_test::read_bytes(dir / "a.gguf"), gguf_test::build_file(kv, tensors));
}

TEST(GgufIo, HonoursGeneralAlignment) {
  for (std::uint32_t alignment : {1U, 8U, 64U, 4096U}) {
    gguf_test::scratch_dir dir;
    gguf::metadata kv = {{"general.alignment", value::u32(alignment)}, {"x", value::string("abc")}};
    const auto tensors = some_tensors();
    write_file(dir / "a.gguf", kv, tensors);
    const auto r = gguf::reader::open(dir / "a.gguf");
    EXPECT_EQ(r.alignment(), alignment);
    EXPECT_EQ(r.data_offset() % alignment, 0U);
    expect_same_content(r, kv, tensors);
  }
}

TEST(GgufIo, StreamingInPiecesGivesTheSameFile) {
  gguf_test::scratch_dir dir;
  const auto kv = every_value_type();
  const auto tensors = some_tensors();
  write_file(dir / "whole.gguf", kv, tensors);
  write_file(dir / "pieces.gguf", kv, tensors, 3);
  EXPECT_EQ(gguf_test::read_bytes(dir / "whole.gguf"), gguf_test::read_bytes(dir / "pieces.gguf"));
}

TEST(GgufIo, SpaceReservedUpFrontIsExactlyTheFile) {
  // The writer preallocates the final size on disk (where the file system can):
  // no block beyond the file's end may stay allocated, for any alignment.
  for (std::uint32_t alignment : {1U, 32U, 4096U}) {
    gguf_test::scratch_dir dir;
    gguf::metadata kv = {{"general.alignment", value::u32(alignment)}};
    const std::vector<gguf::tensor_spec> tensors{{"a", {4096, 300}, ggml_type::f32}, {"b", {7}, ggml_type::f32}};
    write_file(dir / "a.gguf", kv, tensors);
    const auto expected = gguf_test::build_file(kv, tensors);
    struct stat st {};
    ASSERT_EQ(::stat((dir / "a.gguf").c_str(), &st), 0);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), expected.size());
    const auto block = static_cast<std::uint64_t>(st.st_blksize);
    EXPECT_LE(static_cast<std::uint64_t>(st.st_blocks) * 512, gguf::align_up(expected.size(), block)) << "alignment " << alignment;
    EXPECT_EQ(gguf_test::read_bytes(dir / "a.gguf"), expected);
  }
}

// writer::copy (file to file in the kernel for large pieces) and write_gathered
// (writev of many pieces) give the same file as plain writes, for pieces below
// and above writer::kernel_copy_size, and for pieces that cross tensor ends.
TEST(GgufIo, CopiedAndGatheredPiecesGiveTheSameFile) {
  gguf_test::scratch_dir dir;
  const gguf::metadata kv = {{"x", value::string("abc")}};
  const auto big = static_cast<std::int64_t>(3 * gguf::writer::kernel_copy_size / 4 + 12);
  const std::vector<gguf::tensor_spec> tensors = {{"a", {big}, ggml_type::f32}, {"b", {17, 3}, ggml_type::f32},
                                                  {"c", {big / 2}, ggml_type::f32}};
  write_file(dir / "plain.gguf", kv, tensors);
  const auto source = gguf::reader::open(dir / "plain.gguf");
  // All tensor data of the source, as one span (tensors and padding), to cut into pieces.
  const auto first = source.tensors().front().data.data();
  const auto& last = source.tensors().back();
  const std::span<const std::byte> data(first, static_cast<std::size_t>(last.data.data() + last.data.size() - first));
  ASSERT_TRUE(source.extent_of(data).has_value());
  const std::vector<std::byte> elsewhere(16);
  EXPECT_FALSE(source.extent_of(elsewhere).has_value()) << "memory outside the mapping has no file extent";
  for (const std::size_t piece : {std::size_t{100}, gguf::writer::kernel_copy_size + 8, std::size_t{1} << 24}) {
    for (const bool gathered : {false, true}) {
      const auto name = dir / ("out-" + std::to_string(piece) + (gathered ? "g" : "c") + ".gguf");
      gguf::writer w(name, {});
      w.begin(kv, tensors);
      std::vector<std::span<const std::byte>> pieces;
      for (const auto& t : source.tensors()) {
        for (std::size_t at = 0; at < t.data.size(); at += piece) {
          const auto p = t.data.subspan(at, std::min(piece, t.data.size() - at));
          if (gathered) {
            pieces.push_back(p);
          } else {
            w.copy(p, *source.extent_of(p));
          }
        }
      }
      if (gathered) w.write_gathered(pieces);
      w.commit();
      EXPECT_EQ(gguf_test::read_bytes(name), gguf_test::read_bytes(dir / "plain.gguf")) << "piece " << piece << (gathered ? " gathered" : " copied");
    }
  }
  // The data section with its padding is more than the tensors declare: refused.
  gguf::writer w(dir / "bad.gguf", {});
  w.begin(kv, tensors);
  EXPECT_THROW(w.copy(data, *source.extent_of(data)), std::logic_error);
}

TEST(GgufIo, WriterRefusesAnExistingOutputUnlessForced) {
  gguf_test::scratch_dir dir;
  write_file(dir / "a.gguf", {}, some_tensors());
  EXPECT_THROW(gguf::writer(dir / "a.gguf", {}), std::invalid_argument);
  gguf::writer w(dir / "a.gguf", {.force = true, .protect = {}});
  w.begin({{"replaced", value::boolean(true)}}, {});
  w.commit();
  EXPECT_NE(gguf::reader::open(dir / "a.gguf").find("replaced"), nullptr);
}

TEST(GgufIo, WriterNeverOverwritesItsInputEvenWhenForced) {
  gguf_test::scratch_dir dir;
  write_file(dir / "in.gguf", {}, some_tensors());
  std::filesystem::create_hard_link(dir / "in.gguf", dir / "link.gguf");
  try {
    gguf::writer w(dir / "link.gguf", {.force = true, .protect = {dir / "in.gguf"}});
    FAIL() << "expected the writer to refuse its input";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("is the input"), std::string::npos) << e.what();
  }
}

TEST(GgufIo, UncommittedWriterLeavesNothingBehind) {
  gguf_test::scratch_dir dir;
  {
    gguf::writer w(dir / "out.gguf", {});
    w.begin({}, some_tensors());
    w.write(gguf_test::pattern_bytes(10, 0));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path));
}

TEST(GgufIo, WriterChecksTensorByteCounts) {
  gguf_test::scratch_dir dir;
  gguf::writer w(dir / "out.gguf", {});
  w.begin({}, {{"t", {4}, ggml_type::f32}});
  w.write(gguf_test::pattern_bytes(8, 0));
  EXPECT_THROW(w.commit(), std::logic_error);
  EXPECT_THROW(w.write(gguf_test::pattern_bytes(9, 0)), std::logic_error);
}

TEST(GgufIo, WriterRejectsBadMetadataAndShapes) {
  gguf_test::scratch_dir dir;
  {
    gguf::writer w(dir / "out.gguf", {});
    EXPECT_THROW(w.begin({{"general.alignment", value::u32(48)}}, {}), std::invalid_argument);
  }
  {
    gguf::writer w(dir / "out.gguf", {});
    EXPECT_THROW(w.begin({{"general.alignment", value::u64(64)}}, {}), std::invalid_argument);
  }
  {
    gguf::writer w(dir / "out.gguf", {});
    EXPECT_THROW(w.begin({}, {{"q", {48}, ggml_type::q8_0}}), std::invalid_argument);
  }
  {
    gguf::writer w(dir / "out.gguf", {});
    EXPECT_THROW(w.begin({}, {{"five", {1, 1, 1, 1, 1}, ggml_type::f32}}), std::invalid_argument);
  }
  EXPECT_THROW((void)value::integer(value_type::uint8, 256), std::invalid_argument);
  EXPECT_THROW((void)value::array(value_type::uint8, {value::u32(1)}), std::invalid_argument);
}

TEST(GgufIo, MetadataHelpers) {
  gguf::metadata kv = {{"a", value::u32(1)}};
  gguf::set(kv, "b", value::string("x"));
  gguf::set(kv, "a", value::u32(2));
  ASSERT_EQ(kv.size(), 2U);
  EXPECT_EQ(kv[0].second.as_int(), 2);
  gguf::erase(kv, "a");
  EXPECT_EQ(gguf::find(kv, "a"), nullptr);
  EXPECT_EQ(gguf::to_string(value::int_array(value_type::int32, {1, 2, 3}), 2), "[1, 2, ... (3 items)]");
  EXPECT_THROW((void)value::string("x").as_int(), std::invalid_argument);
  EXPECT_THROW((void)value::u64(std::numeric_limits<std::uint64_t>::max()).as_int(), std::invalid_argument);
}

class GgufRealModel : public ::testing::TestWithParam<const char*> {};

TEST_P(GgufRealModel, ReadsAndRewritesByteIdentically) {
  const std::filesystem::path model = std::filesystem::path(NASHPRUNE_DATA_DIR) / GetParam();
  ASSERT_TRUE(std::filesystem::exists(model)) << model << " is missing";
  const auto r = gguf::reader::open(model);
  EXPECT_EQ(r.find("general.architecture")->as_string(), "llama");
  ASSERT_NE(r.find_tensor("token_embd.weight"), nullptr);
  ASSERT_NE(r.find_tensor("blk.0.attn_q.weight"), nullptr);
  EXPECT_GE(r.find("llama.block_count")->as_int(), 1);

  gguf_test::scratch_dir dir;
  std::vector<gguf::tensor_spec> specs(r.tensors().begin(), r.tensors().end());
  {
    gguf::writer w(dir / "copy.gguf", {.force = false, .protect = {model}});
    w.begin(r.metadata(), specs);
    for (const auto& t : r.tensors()) w.write(t.data);
    w.commit();
  }
  EXPECT_EQ(gguf_test::read_bytes(dir / "copy.gguf"), gguf_test::read_bytes(model))
      << "llama.cpp's layout (table order, alignment padding) is reproduced exactly";
}

INSTANTIATE_TEST_SUITE_P(BundledModels, GgufRealModel,
                         ::testing::Values("stories260K.gguf", "TinyStories-656K-Q8_0.gguf"));
