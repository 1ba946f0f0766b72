// Readers of outside files given 100-byte files that claim sizes far beyond themselves (or beyond
// memory): each must answer with its typed error naming the claim, found before anything that
// size is allocated (a std::bad_alloc, or any other exception type, fails these tests). The fuzz
// targets (tests/fuzz) go on from here with random inputs.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "checkpoint/distributed.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/safetensors.h"
#include "core/errors.h"
#include "data/indexed_dataset.h"
#include "tasks/discourse/relations.h"
#include "tasks/unmt/mo_reader.h"
#include "scratch_files.h"

namespace foldtron {
namespace {

namespace fs = std::filesystem;

template <typename T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(value));
}

std::string write_hostile(const std::string& name, const std::string& bytes) {
  return testing::write_file(testing::scratch_path("hostile", name), bytes);
}

// The message of the typed error `read` throws; fails the test on anything else.
template <typename E, typename F>
std::string message_of(F&& read) {
  try {
    read();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error of the expected type";
  return "";
}

std::string safetensors_with_header(const std::string& header, uint64_t claimed_length, size_t data_bytes) {
  std::string out;
  put<uint64_t>(out, claimed_length);
  out += header;
  out += std::string(data_bytes, '\0');
  return out;
}

TEST(HostileInputs, SafetensorsHeaderLongerThanTheFile) {
  const std::string path = write_hostile("a.safetensors", safetensors_with_header(std::string(92, ' '), 1ull << 62, 0));
  const std::string message = message_of<CheckpointError>([&] { SafetensorsFile file(path); });
  EXPECT_NE(message.find("header length 4611686018427387904 is larger"), std::string::npos);
}

TEST(HostileInputs, SafetensorsTensorsBeyondTheFileOrMemory) {
  const std::string huge = R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}})";
  std::string path = write_hostile("b.safetensors", safetensors_with_header(huge, huge.size(), 16));
  EXPECT_NE(message_of<CheckpointError>([&] { SafetensorsFile file(path); }).find("is too large"), std::string::npos);
  const std::string beyond = R"({"w":{"dtype":"F32","shape":[1073741824],"data_offsets":[0,4294967296]}})";
  path = write_hostile("c.safetensors", safetensors_with_header(beyond, beyond.size(), 16));
  EXPECT_NE(message_of<CheckpointError>([&] { SafetensorsFile file(path); }).find("lie outside the 16 data bytes"),
            std::string::npos);
}

TEST(HostileInputs, DatasetIndexClaimingMoreSequencesThanItHolds) {
  std::string idx("MMIDIDX\0\0", 9);
  put<uint64_t>(idx, 1);
  idx.push_back(8);                 // uint16 tokens
  put<uint64_t>(idx, 1ull << 60);   // sequences
  put<uint64_t>(idx, 2);            // document boundaries
  idx.resize(100, '\0');
  const std::string message = message_of<DataError>([&] {
    IndexedDataset dataset("hostile", std::vector<char>(idx.begin(), idx.end()), std::vector<char>(100));
  });
  EXPECT_NE(message.find("100 bytes do not hold 1152921504606846976 sequences"), std::string::npos) << message;
}

TEST(HostileInputs, MoCatalogClaimingTwoBillionMessages) {
  std::string mo;
  put<uint32_t>(mo, 0x950412de);
  put<uint32_t>(mo, 0);           // revision
  put<uint32_t>(mo, 0x7fffffff);  // messages
  put<uint32_t>(mo, 28);          // originals' table
  put<uint32_t>(mo, 28);          // translations' table
  put<uint32_t>(mo, 0);
  put<uint32_t>(mo, 0);
  mo.resize(100, '\0');
  const std::string message = message_of<DataError>([&] { parse_mo(mo, "hostile.mo"); });
  EXPECT_NE(message.find("2147483647 entries at byte 28) runs past the end (100 bytes)"), std::string::npos) << message;
}

// Found by fuzz_hf_config: a layer count of 2^63-1 made the dense-layer list loop for ever.
TEST(HostileInputs, HuggingFaceConfigClaimingEndlessLayers) {
  const std::string path = write_hostile("config.json", R"({"model_type": "qwen3_moe", "hidden_size": 64,
    "num_hidden_layers": 9223372036854775807, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 96, "vocab_size": 320, "num_experts": 8, "num_experts_per_tok": 2,
    "moe_intermediate_size": 48, "decoder_sparse_step": 2, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu"})");
  const std::string folder = fs::path(path).parent_path().string();
  const std::string message = message_of<CheckpointError>([&] { hf_model_config(folder); });
  EXPECT_NE(message.find("num_hidden_layers 9223372036854775807 is not a layer count from 1 to 100000"),
            std::string::npos) << message;
}

// Found by fuzz_checkpoint_metadata (found_format_object.json): a "format" that was an object made
// nlohmann's value() throw type_error out of the reader.
TEST(HostileInputs, CheckpointMetadataWhoseFormatIsNoString) {
  for (const char* format : {R"({"a": 1})", "[1]", "7", "null"}) {
    const std::string path = write_hostile("metadata.json", fmt::format(R"({{"format": {}, "version": 1}})", format));
    const std::string folder = fs::path(path).parent_path().string();
    const std::string message = message_of<CheckpointError>([&] { CheckpointReader reader(folder); });
    EXPECT_NE(message.find("is not a foldtron checkpoint"), std::string::npos) << message;
  }
}

// Found by fuzz_checkpoint_metadata (found_bytes_beyond_uint64.json): a file's "bytes" of 3.9e28
// (a float in JSON) was cast to uint64 out of range, undefined behaviour that UBSan reported; a
// float among a shape, offset or size likewise.
TEST(HostileInputs, CheckpointMetadataCountsMustBeWholeNumbers) {
  const std::string piece = R"({"file": 0, "key": "w", "offset": [0], "size": [4]})";
  const std::string files = R"([{"name": "rank_00000.safetensors", "bytes": BYTES, "checksum": "0123456789abcdef"}])";
  struct Case {
    std::string bytes, shape, piece, expect;
  };
  for (const Case& c : {
           Case{"3942500000000000000000000006", "[4]", piece, "file 'rank_00000.safetensors' 3.9425e+27 bytes"},
           Case{"-1", "[4]", piece, "file 'rank_00000.safetensors' -1 bytes"},
           Case{"8", "[1e30]", piece, "the shape of 'w' as 1e+30, not a whole number"},
           Case{"8", "[4]", R"({"file": 0.5, "key": "w", "offset": [0], "size": [4]})",
                "the file of a piece of 'w' as 0.5, not a whole number"},
           Case{"8", "[4]", R"({"file": 0, "key": "w", "offset": 0, "size": [4]})",
                "the offset of a piece of 'w' as 0, not a list"},
       }) {
    SCOPED_TRACE(c.expect);
    std::string metadata = R"({"format": "foldtron-checkpoint", "version": 1, "state": {}, "files": FILES,
      "tensors": {"w": {"shape": SHAPE, "dtype": "F32", "pieces": [PIECE]}}})";
    metadata.replace(metadata.find("FILES"), 5, files);
    metadata.replace(metadata.find("BYTES"), 5, c.bytes);
    metadata.replace(metadata.find("SHAPE"), 5, c.shape);
    metadata.replace(metadata.find("PIECE"), 5, c.piece);
    const std::string folder = fs::path(write_hostile("metadata.json", metadata)).parent_path().string();
    const std::string message = message_of<CheckpointError>([&] { CheckpointReader reader(folder); });
    EXPECT_NE(message.find(c.expect), std::string::npos) << message;
  }
}

// Found by the fuzz targets: a JSON number beyond double made nlohmann throw out_of_range, which
// the readers did not catch (they caught parse_error only).
TEST(HostileInputs, JsonNumbersBeyondDoubleAreNamedErrors) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}})";
  const std::string tensors = write_hostile("d.safetensors", safetensors_with_header(header, header.size(), 4));
  EXPECT_NE(message_of<CheckpointError>([&] { SafetensorsFile file(tensors); }).find("the header is not valid JSON"),
            std::string::npos);
  const std::string relations = write_hostile("relations.json", R"({"ID": 1e400, "Type": "Implicit"})" "\n");
  EXPECT_NE(message_of<DataError>([&] { read_conll_relations(relations); }).find("relations.json:1: not JSON"),
            std::string::npos);
  const std::string config = write_hostile("config.json", R"({"model_type": "llama", "hidden_size": 1e400})");
  EXPECT_NE(message_of<CheckpointError>([&] { hf_model_config(fs::path(config).parent_path().string()); })
                .find("is not valid JSON"),
            std::string::npos);
}

}  // namespace
}  // namespace foldtron
