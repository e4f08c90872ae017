// Reading llama-imatrix GGUF files.
#include "gguf/imatrix.hpp"

#include <cstring>

namespace gguf {

imatrix::imatrix(const std::filesystem::path& path) : file_(reader::open(path)) {
  const value* type = file_.find("general.type");
  if (type == nullptr || type->type != value_type::string || type->as_string() != "imatrix") {
    throw format_error(path.string() + ": not an imatrix (general.type is not \"imatrix\"); write one with llama-imatrix");
  }
  if (const value* chunks = file_.find("imatrix.chunk_count"); chunks && is_integer(chunks->type)) {
    const value* size = file_.find("imatrix.chunk_size");
    tokens_ = static_cast<std::uint64_t>(chunks->as_int()) * (size && is_integer(size->type) ? static_cast<std::uint64_t>(size->as_int()) : 0);
  }
}

std::optional<std::vector<float>> imatrix::column_energy(const std::string& name) const {
  const tensor_view* t = file_.find_tensor(name + ".in_sum2");
  if (t == nullptr) return std::nullopt;
  if (t->type != nashprune::ggml_type::f32) throw format_error(file_.name() + ": " + t->name + " is not F32");
  std::vector<float> energy(static_cast<std::size_t>(t->dims[0]));
  std::memcpy(energy.data(), t->data.data(), energy.size() * sizeof(float));
  return energy;
}

}  // namespace gguf
