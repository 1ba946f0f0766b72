// safetensors reading and writing, Hugging Face model directories (see safetensors.h).
// Tensor bytes are stored little-endian, as on every host foldtron runs on (x86-64, aarch64).
#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/checksum.h"
#include "core/errors.h"
#include "core/files.h"
#include "core/text.h"

namespace foldtron {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* const kRewriteHint =
    "the file is truncated, damaged or not a safetensors file; copy or download it again, or write it again "
    "with safetensors (save_file) or foldtron";

struct DtypeName {
  const char* name;
  torch::ScalarType dtype;
};

const DtypeName kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
};

std::string supported_dtype_names() {
  std::string out;
  for (const DtypeName& d : kDtypes) out += (out.empty() ? "" : ", ") + std::string(d.name);
  return out;
}

bool dtype_from_name(const std::string& name, torch::ScalarType* dtype) {
  for (const DtypeName& d : kDtypes) {
    if (name == d.name) {
      *dtype = d.dtype;
      return true;
    }
  }
  return false;
}

// numel * element_size with overflow detection.
bool byte_size(const std::vector<int64_t>& shape, size_t element_size, uint64_t* out) {
  uint64_t total = element_size;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(total, static_cast<uint64_t>(d), &total)) return false;
  }
  *out = total;
  return true;
}


}  // namespace

torch::ScalarType safetensors_dtype(const std::string& name, const std::string& where) {
  torch::ScalarType dtype;
  if (!dtype_from_name(name, &dtype)) {
    throw CheckpointError(fmt::format("{}: unknown dtype '{}' (supported: {})", where, name, supported_dtype_names()),
                          "the file was not written by foldtron or safetensors");
  }
  return dtype;
}

std::string safetensors_dtype_name(torch::ScalarType dtype) {
  for (const DtypeName& d : kDtypes) {
    if (d.dtype == dtype) return d.name;
  }
  throw CheckpointError(fmt::format("the dtype {} cannot be stored in safetensors by foldtron", c10::toString(dtype)),
                        "convert the tensor to one of " + supported_dtype_names() + " first");
}

// ---- SafetensorsFile ----

SafetensorsFile::SafetensorsFile(std::string path) : path_(std::move(path)) {
  std::error_code error;
  if (!fs::is_regular_file(path_, error)) {
    throw CheckpointError(fmt::format("the safetensors file '{}' does not exist", path_),
                          "check the path (a Hugging Face model directory holds model.safetensors or shards named "
                          "in model.safetensors.index.json)");
  }
  const uint64_t file_size = fs::file_size(path_, error);
  Fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  if (error || fd.get() < 0) {
    throw IoError(fmt::format("cannot open '{}': {}", path_, error ? error.message() : errno_text()),
                  "check the file's permissions");
  }
  if (file_size < 8) {
    throw CheckpointError(
        fmt::format("'{}' is too short for a safetensors file: {} bytes, fewer than the 8-byte header length",
                    path_, file_size),
        kRewriteHint);
  }
  unsigned char length_bytes[8];
  if (!pread_all(fd.get(), reinterpret_cast<char*>(length_bytes), 8, 0)) {
    throw IoError(fmt::format("cannot read '{}': {}", path_, errno_text()), "check the file and the disk");
  }
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | length_bytes[i];
  if (header_length > file_size - 8) {
    throw CheckpointError(fmt::format("'{}': the header length {} is larger than the {} bytes after it", path_,
                                      header_length, file_size - 8),
                          kRewriteHint);
  }
  std::string text(header_length, '\0');
  if (!pread_all(fd.get(), text.data(), header_length, 8)) {
    throw IoError(fmt::format("cannot read the header of '{}': {}", path_, errno_text()), "check the file and the disk");
  }
  data_start_ = 8 + header_length;
  const uint64_t data_size = file_size - data_start_;

  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double
    throw CheckpointError(fmt::format("'{}': the header is not valid JSON ({})", path_, e.what()), kRewriteHint);
  }
  if (!header.is_object()) {
    throw CheckpointError(fmt::format("'{}': the header is JSON {}, not an object", path_, header.type_name()),
                          kRewriteHint);
  }
  for (const auto& field : header.items()) {
    // Named, not structured bindings: the error lambda below captures `name` (clang 14 refuses those).
    const std::string& name = field.key();
    const json& value = field.value();
    if (name == "__metadata__") {
      if (!value.is_object()) {
        throw CheckpointError(fmt::format("'{}': __metadata__ is {}, not an object of strings", path_, value.type_name()),
                              kRewriteHint);
      }
      for (const auto& [key, item] : value.items()) {
        if (!item.is_string()) {
          throw CheckpointError(
              fmt::format("'{}': __metadata__ value '{}' is {}, not a string", path_, key, item.type_name()), kRewriteHint);
        }
        metadata_[key] = item.get<std::string>();
      }
      continue;
    }
    const auto bad = [&](const std::string& problem) {
      return CheckpointError(fmt::format("'{}': tensor '{}': {}", path_, name, problem), kRewriteHint);
    };
    if (!value.is_object()) throw bad(fmt::format("the header entry is {}, not an object", value.type_name()));
    for (const char* key : {"dtype", "shape", "data_offsets"}) {
      if (!value.contains(key)) throw bad(fmt::format("the header entry has no '{}'", key));
    }
    Entry entry{};
    const json& dtype = value["dtype"];
    if (!dtype.is_string()) throw bad("dtype is not a string");
    if (!dtype_from_name(dtype.get<std::string>(), &entry.dtype)) {
      throw CheckpointError(fmt::format("'{}': tensor '{}' has the unknown dtype '{}' (foldtron reads {})", path_, name,
                                        dtype.get<std::string>(), supported_dtype_names()),
                            "convert the checkpoint's tensors to a supported dtype (e.g. with safetensors in Python)");
    }
    const json& shape = value["shape"];
    if (!shape.is_array()) throw bad("shape is not an array");
    for (const json& d : shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) throw bad("shape " + shape.dump() + " is not a list of sizes >= 0");
      entry.shape.push_back(d.get<int64_t>());
    }
    const json& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      throw bad("data_offsets " + offsets.dump() + " is not [begin, end] with begin, end >= 0");
    }
    entry.begin = offsets[0].get<uint64_t>();
    entry.end = offsets[1].get<uint64_t>();
    if (entry.begin > entry.end || entry.end > data_size) {
      throw bad(fmt::format("data_offsets [{}, {}] lie outside the {} data bytes of the file", entry.begin, entry.end,
                            data_size));
    }
    uint64_t expected = 0;
    if (!byte_size(entry.shape, c10::elementSize(entry.dtype), &expected)) {
      throw bad(fmt::format("shape {} is too large", shape_text(entry.shape)));
    }
    if (entry.end - entry.begin != expected) {
      throw bad(fmt::format("data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}", entry.begin, entry.end,
                            entry.end - entry.begin, shape_text(entry.shape), dtype.get<std::string>(), expected));
    }
    entries_.emplace(name, std::move(entry));
  }
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;  // std::map keeps them sorted
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) {
    throw CheckpointError(fmt::format("the tensor '{}' is not in '{}' ({} tensors)", name, path_, entries_.size()),
                          "check the name; the file's names() lists what it holds");
  }
  return it->second;
}

std::vector<int64_t> SafetensorsFile::shape(const std::string& name) const { return entry(name).shape; }

torch::ScalarType SafetensorsFile::dtype(const std::string& name) const { return entry(name).dtype; }

torch::Tensor SafetensorsFile::load(const std::string& name) const {
  const Entry& e = entry(name);
  torch::Tensor out = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));  // CPU, contiguous
  const uint64_t size = e.end - e.begin;
  if (size == 0) return out;
  Fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw IoError(fmt::format("cannot open '{}': {}", path_, errno_text()), "check the file's permissions");
  if (!pread_all(fd.get(), static_cast<char*>(out.data_ptr()), size, data_start_ + e.begin)) {
    throw IoError(fmt::format("cannot read tensor '{}' ({} bytes at offset {}) from '{}': {}", name, size,
                              data_start_ + e.begin, path_, errno ? errno_text() : "unexpected end of file"),
                  "the file changed or was truncated after it was opened; check the disk and reopen it");
  }
  return out;
}

// ---- SafetensorsWriter ----

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<Entry> entries,
                                     const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)), entries_(std::move(entries)) {
  std::set<std::string> seen;
  for (const Entry& entry : entries_) {
    if (entry.name == "__metadata__") {
      throw CheckpointError(fmt::format("cannot write '{}': '__metadata__' is reserved and cannot name a tensor", path_),
                            "rename the tensor");
    }
    if (!seen.insert(entry.name).second) {
      throw CheckpointError(fmt::format("cannot write '{}': the tensor name '{}' appears twice", path_, entry.name),
                            "give every tensor a unique name");
    }
    safetensors_dtype_name(entry.dtype);  // throws for unsupported dtypes
  }
  // Data order as in the reference writer: larger elements first, then by name, so every tensor
  // starts aligned to its element size.
  std::stable_sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) {
    const size_t size_a = c10::elementSize(a.dtype), size_b = c10::elementSize(b.dtype);
    if (size_a != size_b) return size_a > size_b;
    return a.name < b.name;
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const Entry& entry : entries_) {
    uint64_t size = c10::elementSize(entry.dtype);
    for (int64_t d : entry.shape) size *= static_cast<uint64_t>(d);
    header[entry.name] = {{"dtype", safetensors_dtype_name(entry.dtype)},
                          {"shape", entry.shape},
                          {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  char length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<char>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff);
  file_ = std::make_unique<AtomicFile>(path_, "checkpoint_write");
  checksum_ = std::make_unique<Checksum>();
  bytes_ = 8 + text.size() + offset;
  put(length_bytes, 8);
  put(text.data(), text.size());
}

SafetensorsWriter::~SafetensorsWriter() = default;  // unfinished: the AtomicFile removes its temporary

void SafetensorsWriter::put(const void* data, uint64_t size) {
  file_->write(data, size);
  checksum_->update(data, size);
}

void SafetensorsWriter::write(const torch::Tensor& tensor) {
  FT_CHECK(file_ != nullptr && next_ < entries_.size(), "SafetensorsWriter::write past the last entry of " + path_);
  const Entry& entry = entries_[next_];
  if (!tensor.defined() || tensor.layout() != torch::kStrided || tensor.scalar_type() != entry.dtype ||
      tensor.sizes().vec() != entry.shape) {
    throw CheckpointError(fmt::format("cannot write '{}': tensor '{}' is not the dense {} {} its header declares", path_,
                                      entry.name, safetensors_dtype_name(entry.dtype), shape_text(entry.shape)),
                          "pass dense tensors of the declared dtype and shape");
  }
  // One contiguous CPU copy at a time: a GPU model is never copied to the host all at once.
  const torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  put(t.data_ptr(), static_cast<uint64_t>(t.numel()) * t.element_size());
  ++next_;
}

WrittenFile SafetensorsWriter::finish() {
  FT_CHECK(file_ != nullptr && next_ == entries_.size(), "SafetensorsWriter::finish before every tensor of " + path_);
  file_->commit();
  file_.reset();
  return {checksum_->value(), bytes_};
}

WrittenFile write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsWriter::Entry> entries;
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined() || tensor.layout() != torch::kStrided) {
      throw CheckpointError(fmt::format("cannot write '{}': tensor '{}' is {}", path, name,
                                        tensor.defined() ? "not a dense (strided) tensor" : "undefined"),
                            "pass dense tensors (to_dense() a sparse one)");
    }
    entries.push_back({name, tensor.scalar_type(), tensor.sizes().vec()});
    by_name[name] = &tensor;
  }
  SafetensorsWriter writer(path, std::move(entries), metadata);
  for (const SafetensorsWriter::Entry& entry : writer.order()) writer.write(*by_name.at(entry.name));
  return writer.finish();
}

// ---- HfCheckpoint ----

HfCheckpoint::HfCheckpoint(std::string dir) : dir_(std::move(dir)) {
  const fs::path single = fs::path(dir_) / "model.safetensors";
  const fs::path index = fs::path(dir_) / "model.safetensors.index.json";
  std::error_code error;
  if (fs::is_regular_file(single, error)) {
    auto file = std::make_unique<SafetensorsFile>(single.string());
    for (const std::string& name : file->names()) weight_map_.emplace(name, "model.safetensors");
    shards_.emplace("model.safetensors", std::move(file));
    return;
  }
  if (!fs::is_regular_file(index, error)) {
    if (!fs::is_directory(dir_, error)) {
      throw CheckpointError(fmt::format("the model directory '{}' does not exist", dir_),
                            "pass a Hugging Face model directory (config.json plus safetensors weights)");
    }
    throw CheckpointError(
        fmt::format("the model directory '{}' holds neither model.safetensors nor model.safetensors.index.json", dir_),
        "pass a directory written by save_pretrained (safetensors); PyTorch .bin checkpoints must be converted to "
        "safetensors first");
  }
  const auto bad_index = [&](const std::string& problem) {
    return CheckpointError(fmt::format("'{}': {}", index.string(), problem),
                           "the index must be {\"weight_map\": {\"<tensor>\": \"<shard file>\", ...}}; copy or "
                           "download it again");
  };
  json j;
  try {
    std::ifstream in(index);
    j = json::parse(in);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double
    throw bad_index(fmt::format("not valid JSON ({})", e.what()));
  }
  if (!j.is_object() || !j.contains("weight_map")) throw bad_index("it has no 'weight_map'");
  const json& weight_map = j["weight_map"];
  if (!weight_map.is_object()) throw bad_index(fmt::format("'weight_map' is {}, not an object", weight_map.type_name()));
  std::set<std::string> shard_files;
  for (const auto& [name, file] : weight_map.items()) {
    if (!file.is_string()) throw bad_index(fmt::format("the shard of '{}' is {}, not a file name", name, file.type_name()));
    weight_map_.emplace(name, file.get<std::string>());
    shard_files.insert(file.get<std::string>());
  }
  for (const std::string& file : shard_files) {
    if (!fs::is_regular_file(fs::path(dir_) / file, error)) {
      throw CheckpointError(fmt::format("the shard '{}' named in '{}' is missing from the model directory '{}'", file,
                                        index.string(), dir_),
                            "download or copy every shard file the index's weight_map names");
    }
  }
}

std::vector<std::string> HfCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(weight_map_.size());
  for (const auto& [name, file] : weight_map_) out.push_back(name);
  return out;
}

const SafetensorsFile& HfCheckpoint::file_of(const std::string& name) const {
  const auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    throw CheckpointError(fmt::format("the tensor '{}' is not in the checkpoint '{}' ({} tensors)", name, dir_,
                                      weight_map_.size()),
                          "the checkpoint does not match the model: check config.json (architecture, layers, "
                          "experts, tied embeddings) against the weights");
  }
  auto shard = shards_.find(it->second);
  if (shard == shards_.end()) {
    const std::string path = (fs::path(dir_) / it->second).string();
    shard = shards_.emplace(it->second, std::make_unique<SafetensorsFile>(path)).first;
  }
  if (!shard->second->has(name)) {
    throw CheckpointError(fmt::format("the index of '{}' places the tensor '{}' in '{}', which does not hold it", dir_,
                                      name, it->second),
                          "the index and the shards come from different saves; copy or download them again");
  }
  return *shard->second;
}

std::vector<int64_t> HfCheckpoint::shape(const std::string& name) const { return file_of(name).shape(name); }

torch::ScalarType HfCheckpoint::dtype(const std::string& name) const { return file_of(name).dtype(name); }

torch::Tensor HfCheckpoint::load(const std::string& name) const { return file_of(name).load(name); }

}  // namespace foldtron
