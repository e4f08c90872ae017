// Writes the fuzz seed corpus: small valid GGUF files made by gguf::writer
// (every value type, nested arrays, several alignments and tensor types).
#include <gguf/gguf.hpp>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_fuzz_corpus DIR\n";
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  using gguf::value;
  using gguf::value_type;
  gguf::metadata all = {
      {"general.architecture", value::string("llama")},
      {"u8", value::integer(value_type::uint8, 7)},         {"i8", value::integer(value_type::int8, -7)},
      {"u16", value::integer(value_type::uint16, 700)},     {"i16", value::integer(value_type::int16, -700)},
      {"u32", value::u32(70000)},                           {"i32", value::i32(-70000)},
      {"u64", value::u64(7000000000ULL)},                   {"i64", value::integer(value_type::int64, -7000000000LL)},
      {"f32", value::f32(0.5F)},                            {"f64", value::f64(-0.25)},
      {"bool", value::boolean(true)},                       {"str", value::string("text")},
      {"tokens", value::string_array({"<unk>", "a", "b"})}, {"scores", value::f32_array({0.0F, -1.0F, -2.0F})},
      {"nested", value::array(value_type::array, {value::int_array(value_type::int32, {1, 2}), value::array(value_type::uint8, {})})},
  };
  const std::vector<gguf::tensor_spec> tensors = {
      {"token_embd.weight", {8, 3}, nashprune::ggml_type::f32},
      {"blk.0.attn_q.weight", {32, 2}, nashprune::ggml_type::q8_0},
      {"blk.0.ffn_up.weight", {4}, nashprune::ggml_type::f16},
  };
  int index = 0;
  auto emit = [&](gguf::metadata kv, std::vector<gguf::tensor_spec> specs) {
    gguf::writer w(dir / ("seed" + std::to_string(index++) + ".gguf"), {.force = true, .protect = {}});
    w.begin(kv, specs);
    for (const auto& t : specs) w.write_zeros(t.bytes());
    w.commit();
  };
  emit(all, tensors);
  emit({}, {});
  emit({{"general.alignment", value::u32(8)}}, tensors);
  emit({{"general.alignment", value::u32(64)}, {"k", value::string("")}}, {tensors[0]});
  emit(all, {});
  return 0;
}
