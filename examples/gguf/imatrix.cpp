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

std::optional<std::vector<float>> imatrix::mean_column_energy(const std::string& name) const {
  auto energy = column_energy(name);
  if (!energy) return energy;
  const tensor_view* counts = file_.find_tensor(name + ".counts");
  if (counts == nullptr) throw format_error(file_.name() + ": " + name + ".in_sum2 has no " + name + ".counts");
  if (counts->type != nashprune::ggml_type::f32 || counts->elements() < 1) {
    throw format_error(file_.name() + ": " + counts->name + " is not an F32 count");
  }
  float count = 0;
  std::memcpy(&count, counts->data.data(), sizeof(float));
  for (float& e : *energy) e = count > 0 ? e / count : 1.0f;
  return energy;
}

std::vector<std::string> imatrix::entries() const {
  constexpr std::string_view suffix = ".in_sum2";
  std::vector<std::string> names;
  for (const auto& t : file_.tensors()) {
    if (t.name.size() > suffix.size() && t.name.ends_with(suffix)) names.push_back(t.name.substr(0, t.name.size() - suffix.size()));
  }
  return names;
}

std::vector<std::string> imatrix::datasets() const {
  std::vector<std::string> names;
  if (const value* v = file_.find("imatrix.datasets"); v != nullptr && v->is_array()) {
    for (const auto& item : v->as_array()) {
      if (item.type == value_type::string) names.push_back(item.as_string());
    }
  }
  return names;
}

}  // namespace gguf
