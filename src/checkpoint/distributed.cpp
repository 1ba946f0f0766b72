// Distributed checkpoints of sharded tensors (see distributed.h).
#include "checkpoint/distributed.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "checkpoint/safetensors.h"
#include "core/checksum.h"
#include "core/errors.h"
#include "core/files.h"
#include "core/text.h"
#include "parallel/communicator.h"

namespace foldtron {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string rank_file_name(int64_t rank) { return fmt::format("rank_{:05d}.safetensors", rank); }

// The key of a piece inside its rank file: the tensor's name and the box's offset.
std::string piece_key(const std::string& tensor, const Box& box) {
  return fmt::format("{}@{}", tensor, fmt::join(box.offset, ","));
}

std::string box_text(const Box& box) {
  std::string text;
  for (size_t d = 0; d < box.offset.size(); ++d) {
    text += fmt::format("{}{}:{}", d ? ", " : "", box.offset[d], box.offset[d] + box.size[d]);
  }
  return "[" + text + "]";
}

// The view of `t` ([outer.size...]) holding `inner`, a box inside `outer`.
torch::Tensor sub_view(const torch::Tensor& t, const Box& outer, const Box& inner) {
  torch::Tensor view = t;
  for (size_t d = 0; d < inner.offset.size(); ++d) {
    view = view.narrow(static_cast<int64_t>(d), inner.offset[d] - outer.offset[d], inner.size[d]);
  }
  return view;
}

CheckpointError broken(const std::string& dir, const std::string& what) {
  return CheckpointError(fmt::format("checkpoint '{}': {}", dir, what),
                         "the checkpoint is damaged or was not written by foldtron; load another one (the folder "
                         "holds the earlier ones) or save it again");
}

}  // namespace

json write_rank_files(const std::string& dir, int64_t rank, const std::vector<CheckpointItem>& items,
                      const std::vector<std::pair<std::string, torch::Tensor>>& extra, int64_t threads) {
  FT_CHECK(threads >= 1, "write_rank_files: threads must be positive");
  // Largest items first, each to the part with the fewest bytes so far.
  std::vector<const CheckpointItem*> order;
  for (const CheckpointItem& item : items) {
    if (!item.box.empty()) order.push_back(&item);
  }
  const auto bytes_of = [](const CheckpointItem* item) {
    return item->box.numel() * static_cast<int64_t>(c10::elementSize(item->dtype));
  };
  std::stable_sort(order.begin(), order.end(), [&](auto* a, auto* b) { return bytes_of(a) > bytes_of(b); });
  std::vector<std::vector<const CheckpointItem*>> parts(static_cast<size_t>(threads));
  std::vector<int64_t> part_bytes(parts.size(), 0);
  for (const CheckpointItem* item : order) {
    const size_t p = static_cast<size_t>(std::min_element(part_bytes.begin(), part_bytes.end()) - part_bytes.begin());
    parts[p].push_back(item);
    part_bytes[p] += bytes_of(item);
  }
  const auto write_part = [&](size_t p) {
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    json pieces = json::array();
    for (const CheckpointItem* item : parts[p]) {
      const std::string key = piece_key(item->tensor, item->box);
      tensors.emplace_back(key, item->data.detach().to(item->dtype));
      pieces.push_back({{"tensor", item->tensor},
                        {"key", key},
                        {"shape", item->shape},
                        {"dtype", safetensors_dtype_name(item->dtype)},
                        {"offset", item->box.offset},
                        {"size", item->box.size}});
    }
    if (p == 0) tensors.insert(tensors.end(), extra.begin(), extra.end());
    const std::string name = p == 0 ? rank_file_name(rank) : fmt::format("rank_{:05d}-{}.safetensors", rank, p);
    const WrittenFile written = write_safetensors((fs::path(dir) / name).string(), tensors);
    return json{{"name", name}, {"rank", rank}, {"bytes", written.bytes}, {"checksum", Checksum::hex(written.checksum)},
                {"pieces", pieces}};
  };
  // Part 0 (the RNG streams at least) on this thread, the others beside it.
  std::vector<std::future<json>> others;
  for (size_t p = 1; p < parts.size(); ++p) {
    if (!parts[p].empty()) others.push_back(std::async(std::launch::async, write_part, p));
  }
  json files = json::array();
  std::exception_ptr error;
  try {
    files.push_back(write_part(0));
  } catch (...) {
    error = std::current_exception();
  }
  for (auto& other : others) {
    try {
      files.push_back(other.get());
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  return files;
}

std::vector<std::string> all_gather_strings(Communicator& group, const std::string& mine) {
  std::vector<int64_t> lengths;
  for (const auto& r : group.all_gather_ints({static_cast<int64_t>(mine.size())})) lengths.push_back(r[0]);
  torch::Tensor bytes = torch::empty({static_cast<int64_t>(mine.size())}, torch::kUInt8);
  if (!mine.empty()) std::memcpy(bytes.data_ptr(), mine.data(), mine.size());  // an empty tensor's data is null
  const torch::Tensor all = group.all_gather(bytes, lengths);
  std::vector<std::string> out;
  int64_t offset = 0;
  for (int64_t n : lengths) {
    out.emplace_back(static_cast<const char*>(all.data_ptr()) + offset, static_cast<size_t>(n));
    offset += n;
  }
  return out;
}

std::string broadcast_string(Communicator& group, const std::string& text, int root) {
  const bool mine = group.rank() == root;
  torch::Tensor length = torch::tensor({mine ? static_cast<int64_t>(text.size()) : int64_t{0}}, torch::kLong);
  group.broadcast(length, root);
  const int64_t size = length.item<int64_t>();
  if (size == 0) return {};
  torch::Tensor bytes = torch::empty({size}, torch::kUInt8);
  if (mine) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  group.broadcast(bytes, root);
  return {static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(size)};
}

void write_metadata(const std::string& dir, const std::vector<json>& files, const json& state) {
  json tensors = json::object(), file_list = json::array();
  for (size_t f = 0; f < files.size(); ++f) {
    file_list.push_back({{"name", files[f].at("name")}, {"bytes", files[f].at("bytes")}, {"checksum", files[f].at("checksum")}});
    for (const json& piece : files[f].at("pieces")) {
      json& tensor = tensors[piece.at("tensor").get<std::string>()];
      tensor["shape"] = piece.at("shape");
      tensor["dtype"] = piece.at("dtype");
      tensor["pieces"].push_back({{"file", f}, {"key", piece.at("key")}, {"offset", piece.at("offset")},
                                  {"size", piece.at("size")}});
    }
  }
  const json metadata{{"format", kCheckpointFormat}, {"version", kCheckpointVersion}, {"state", state},
                      {"files", file_list}, {"tensors", tensors}};
  write_file_atomically((fs::path(dir) / "metadata.json").string(), metadata.dump(1) + "\n");
}

CheckpointReader::CheckpointReader(std::string dir, bool verify) : dir_(std::move(dir)), verify_(verify) {
  const std::string path = (fs::path(dir_) / "metadata.json").string();
  std::ifstream in(path);
  if (!in) {
    throw CheckpointError(fmt::format("'{}' holds no metadata.json: not a complete foldtron checkpoint", dir_),
                          "point at a folder written by foldtron's save (iter_NNNNNNN), or at the save folder "
                          "whose 'latest' names one");
  }
  json metadata;
  try {
    metadata = json::parse(in);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double
    throw broken(dir_, fmt::format("metadata.json is not valid JSON ({})", e.what()));
  }
  // Any JSON type is compared, never converted (a format that is an object is no checkpoint either).
  const auto format = metadata.find("format");  // end() for anything but an object
  if (format == metadata.end() || *format != kCheckpointFormat) {
    throw CheckpointError(fmt::format("'{}' is not a foldtron checkpoint (metadata.json names no format '{}')", path,
                                      kCheckpointFormat),
                          "import Hugging Face directories with foldtron convert --from hf --to foldtron");
  }
  const int version = metadata.contains("version") && metadata.at("version").is_number_integer()
                          ? metadata.at("version").get<int>()
                          : -1;
  if (version < 1 || version > kCheckpointVersion) {
    throw CheckpointError(fmt::format("checkpoint '{}' has format version {}; this build reads versions 1 to {}", dir_,
                                      version, kCheckpointVersion),
                          "load it with the foldtron version that wrote it, or a newer one");
  }
  // Sizes, offsets and indices must be JSON integers: nlohmann converts a float such as 1e30 to
  // an integer type by a plain cast, undefined out of range (found by fuzz_checkpoint_metadata).
  const auto excerpt = [](const json& value) {
    const std::string text = value.dump();
    return text.size() > 40 ? text.substr(0, 37) + "..." : text;
  };
  const auto whole = [&](const json& value, const std::string& what) {
    if (!value.is_number_integer()) {
      throw broken(dir_, fmt::format("metadata.json gives {} as {}, not a whole number", what, excerpt(value)));
    }
    return value.get<int64_t>();
  };
  const auto wholes = [&](const json& values, const std::string& what) {
    if (!values.is_array()) {
      throw broken(dir_, fmt::format("metadata.json gives {} as {}, not a list", what, excerpt(values)));
    }
    std::vector<int64_t> out;
    for (const json& value : values) out.push_back(whole(value, what));
    return out;
  };
  try {
    state_ = metadata.at("state");
    for (const json& f : metadata.at("files")) {
      File file;
      file.name = f.at("name").get<std::string>();
      const json& bytes = f.at("bytes");
      if (!bytes.is_number_unsigned()) {
        throw broken(dir_, fmt::format("metadata.json gives file '{}' {} bytes, not a whole number of them", file.name,
                                       excerpt(bytes)));
      }
      file.bytes = bytes.get<uint64_t>();
      const std::string checksum = f.at("checksum").get<std::string>();
      if (checksum.size() != 16 || checksum.find_first_not_of("0123456789abcdef") != std::string::npos) {
        throw broken(dir_, fmt::format("metadata.json gives file '{}' the checksum '{}' (16 hex digits expected)",
                                       file.name, checksum));
      }
      file.checksum = std::stoull(checksum, nullptr, 16);
      files_.push_back(std::move(file));
    }
    for (const auto& [name, t] : metadata.at("tensors").items()) {
      TensorEntry tensor;
      tensor.shape = wholes(t.at("shape"), fmt::format("the shape of '{}'", name));
      tensor.dtype = safetensors_dtype(t.at("dtype").get<std::string>(), path);
      for (const json& p : t.at("pieces")) {
        const std::string of = fmt::format("a piece of '{}'", name);
        Piece piece{whole(p.at("file"), "the file of " + of), p.at("key").get<std::string>(),
                    Box{wholes(p.at("offset"), "the offset of " + of), wholes(p.at("size"), "the size of " + of)}};
        bool fits = piece.file >= 0 && piece.file < num_files() && piece.box.offset.size() == tensor.shape.size() &&
                    piece.box.size.size() == tensor.shape.size();
        for (size_t d = 0; fits && d < tensor.shape.size(); ++d) {
          fits = piece.box.offset[d] >= 0 && piece.box.size[d] >= 0 &&
                 piece.box.offset[d] + piece.box.size[d] <= tensor.shape[d];
        }
        if (!fits) throw broken(dir_, fmt::format("metadata.json describes a piece of '{}' that does not fit", name));
        tensor.pieces.push_back(std::move(piece));
      }
      tensors_[name] = std::move(tensor);
    }
  } catch (const json::exception& e) {
    throw broken(dir_, fmt::format("metadata.json lacks a field or has one of the wrong type ({})", e.what()));
  }
}

CheckpointReader::~CheckpointReader() = default;

std::vector<std::string> CheckpointReader::tensors() const {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : tensors_) names.push_back(name);
  return names;
}

std::vector<int64_t> CheckpointReader::shape(const std::string& tensor) const {
  const auto it = tensors_.find(tensor);
  if (it == tensors_.end()) throw broken(dir_, fmt::format("it holds no tensor '{}'", tensor));
  return it->second.shape;
}

torch::ScalarType CheckpointReader::dtype(const std::string& tensor) const {
  const auto it = tensors_.find(tensor);
  if (it == tensors_.end()) throw broken(dir_, fmt::format("it holds no tensor '{}'", tensor));
  return it->second.dtype;
}

void CheckpointReader::check_size(const File& f) const {
  std::error_code error;
  const auto size = fs::file_size((fs::path(dir_) / f.name).string(), error);
  if (error) throw broken(dir_, fmt::format("its file '{}' is missing ({})", f.name, error.message()));
  if (size != f.bytes) {
    throw broken(dir_, fmt::format("its file '{}' has {} bytes, but metadata.json recorded {} (truncated?)", f.name,
                                   size, f.bytes));
  }
}

const SafetensorsFile& CheckpointReader::file(int64_t index) const {
  auto& open = open_[index];
  if (open) return *open;
  if (verify_) verify_file(index);
  const File& f = files_.at(static_cast<size_t>(index));
  check_size(f);
  open = std::make_unique<SafetensorsFile>((fs::path(dir_) / f.name).string());
  return *open;
}

uint64_t CheckpointReader::check_file(int64_t index) const {
  const File& f = files_.at(static_cast<size_t>(index));
  check_size(f);
  if (file_checksum((fs::path(dir_) / f.name).string()) != f.checksum) {
    throw broken(dir_, fmt::format("its file '{}' does not match its checksum {} (corrupted)", f.name,
                                   Checksum::hex(f.checksum)));
  }
  return f.bytes;
}

void CheckpointReader::verify_file(int64_t index) const { verify_share(index, num_files()); }

void CheckpointReader::verify_share(int64_t rank, int64_t ranks, int64_t threads) const {
  FT_CHECK(ranks >= 1 && threads >= 1 && rank >= 0 && rank < ranks, "verify_share: bad rank, ranks or threads");
  verified_.resize(files_.size(), 0);
  std::vector<int64_t> todo;
  for (int64_t index = rank; index < num_files(); index += ranks) {
    if (!verified_[static_cast<size_t>(index)]) todo.push_back(index);
  }
  // `threads` files at a time; the first error (in file order) is the one thrown.
  for (size_t begin = 0; begin < todo.size(); begin += static_cast<size_t>(threads)) {
    const size_t end = std::min(todo.size(), begin + static_cast<size_t>(threads));
    std::vector<std::future<uint64_t>> checks;
    for (size_t i = begin; i < end; ++i) {
      checks.push_back(std::async(std::launch::async, [this, index = todo[i]] { return check_file(index); }));
    }
    std::exception_ptr error;
    for (size_t i = begin; i < end; ++i) {
      try {
        bytes_read_ += checks[i - begin].get();
        verified_[static_cast<size_t>(todo[i])] = 1;
      } catch (...) {
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  }
}

void CheckpointReader::read(const std::string& tensor, const Box& box, const torch::Tensor& out) const {
  const auto it = tensors_.find(tensor);
  if (it == tensors_.end()) throw broken(dir_, fmt::format("it holds no tensor '{}'", tensor));
  const TensorEntry& t = it->second;
  FT_CHECK(box.offset.size() == t.shape.size() && out.sizes().vec() == box.size, "read: box and output disagree");
  torch::NoGradGuard no_grad;
  int64_t covered = 0;
  for (const Piece& piece : t.pieces) {
    const Box overlap = intersect(box, piece.box);
    if (overlap.empty()) continue;
    if (cached_key_ != std::make_pair(piece.file, piece.key)) {
      cached_ = torch::Tensor();  // one piece in memory at a time
      cached_ = file(piece.file).load(piece.key);
      cached_key_ = {piece.file, piece.key};
      bytes_read_ += static_cast<uint64_t>(cached_.nbytes());
    }
    const torch::Tensor& data = cached_;  // [piece.box.size...]
    if (data.sizes().vec() != piece.box.size) {
      throw broken(dir_, fmt::format("piece {} of '{}' has shape {}", box_text(piece.box), tensor,
                                     shape_text(data.sizes().vec())));
    }
    sub_view(out, box, overlap).copy_(sub_view(data, piece.box, overlap));
    covered += overlap.numel();
  }
  // Pieces never overlap (each element is written once), so the count tells whether all arrived.
  if (covered != box.numel()) {
    throw broken(dir_, fmt::format("its pieces of '{}' {} cover {} of the {} elements of {}", tensor,
                                   shape_text(t.shape), covered, box.numel(), box_text(box)));
  }
}

torch::Tensor CheckpointReader::read_full(const std::string& tensor) const {
  const std::vector<int64_t> global = shape(tensor);
  torch::Tensor out = torch::empty(global, torch::TensorOptions().dtype(dtype(tensor)));
  read(tensor, Box{std::vector<int64_t>(global.size(), 0), global}, out);
  return out;
}

torch::Tensor CheckpointReader::rank_tensor(int64_t rank, const std::string& key) const {
  const std::string name = rank_file_name(rank);
  for (int64_t f = 0; f < num_files(); ++f) {
    if (files_[static_cast<size_t>(f)].name != name) continue;
    const SafetensorsFile& safetensors = file(f);
    return safetensors.has(key) ? safetensors.load(key) : torch::Tensor();
  }
  return torch::Tensor();
}

void verify_together(const CheckpointReader& reader, Communicator& world, int64_t threads) {
  std::string mine;  // this rank's failure, empty when its files verified
  try {
    reader.verify_share(world.rank(), world.size(), threads);
  } catch (const Error& e) {
    mine = e.what();
  } catch (const std::exception& e) {
    mine = fmt::format("checkpoint '{}': {}", reader.dir(), e.what());
  }
  // Every rank reaches the gather, so every rank learns the first failure and reports it.
  const std::vector<std::string> all = all_gather_strings(world, mine);
  for (size_t rank = 0; rank < all.size(); ++rank) {
    if (all[rank].empty()) continue;
    throw CheckpointError(rank == static_cast<size_t>(world.rank()) ? all[rank]
                                                                     : fmt::format("(found by rank {}) {}", rank, all[rank]),
                          "the checkpoint is damaged or incomplete; load an earlier one (the save folder keeps "
                          "checkpoint.keep_last of them) or save it again");
  }
}

}  // namespace foldtron
