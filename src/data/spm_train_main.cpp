// foldtron_spm_train: sentencepiece's trainer as a program of its own, which `foldtron tokenizer
// train` runs (data/tokenizer.cpp). It links libsentencepiece_train but not torch, so the two
// protobuf copies never meet (data/spm_plugin.cpp says why they must not) and sentencepiece's
// progress log reaches stderr. Arguments: --key=value (sentencepiece's trainer flags) and
// --seed=N; exit code 0, or 1 with sentencepiece's message on stderr.
#include <iostream>
#include <string>
#include <unordered_map>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

int main(int argc, char** argv) {
  std::unordered_map<std::string, std::string> args;
  unsigned seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t equals = arg.find('=');
    if (arg.rfind("--", 0) != 0 || equals == std::string::npos) {
      std::cerr << "foldtron_spm_train: expected --key=value, got '" << arg << "'\n";
      return 1;
    }
    const std::string key = arg.substr(2, equals - 2), value = arg.substr(equals + 1);
    if (key == "seed") {
      seed = static_cast<unsigned>(std::stoul(value));
    } else {
      args[key] = value;
    }
  }
  sentencepiece::SetRandomGeneratorSeed(seed);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) {
    std::cerr << "foldtron_spm_train: " << status.ToString() << "\n";
    return 1;
  }
  return 0;
}
