// `fbt prepare-bytes FILE OUT_DIR`: a text file as byte tokens, split train/valid/test 90/5/5.
// `fbt prepare-algorithmic --variables K OUT_DIR`: the code-execution task (data/algorithmic.hpp).
#include <fmt/core.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "data/algorithmic.hpp"
#include "util/files.hpp"

namespace fs = std::filesystem;

namespace fbt::cli {

namespace {

void run_prepare_bytes(const std::string& input, const std::string& out_dir) {
  std::ifstream in(input, std::ios::binary);
  if (!in) throw std::runtime_error(input + ": cannot open");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() < 1000) throw std::runtime_error(input + ": only " + std::to_string(data.size()) + " bytes, too small to split");
  fs::create_directories(out_dir);
  const size_t n_train = data.size() * 90 / 100, n_valid = data.size() * 5 / 100;
  write_file_atomic((fs::path(out_dir) / "train.bin").string(), data.data(), n_train);
  write_file_atomic((fs::path(out_dir) / "valid.bin").string(), data.data() + n_train, n_valid);
  write_file_atomic((fs::path(out_dir) / "test.bin").string(), data.data() + n_train + n_valid, data.size() - n_train - n_valid);
  fmt::print("{}: {} bytes -> train {} / valid {} / test {} in {}\n", input, data.size(), n_train, n_valid,
             data.size() - n_train - n_valid, out_dir);
}

}  // namespace

void add_prepare_bytes(CLI::App& app) {
  auto paths = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* sub = app.add_subcommand("prepare-bytes", "split a text file into train/valid/test.bin (90/5/5), byte tokens");
  sub->add_option("input", paths->first)->required()->check(CLI::ExistingFile);
  sub->add_option("out_dir", paths->second)->required();
  sub->callback([paths] { run_prepare_bytes(paths->first, paths->second); });
}

void add_prepare_algorithmic(CLI::App& app) {
  auto task = std::make_shared<AlgorithmicTask>();
  auto out_dir = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("prepare-algorithmic",
                                     "write the code-execution task: {train,valid,test}.txt, .labels and vocab.txt");
  sub->add_option("--variables", task->variables, "variables per program, 1 to 5 (x y z p r)")
      ->required()
      ->check(at_least(1));
  sub->add_option("--statements", task->statements, "statements per program")->check(at_least(1));
  sub->add_option("--train-programs", task->train_programs,
                  "programs in train.txt (10,000 as the official task; more for short programs)")
      ->check(at_least(1));
  sub->add_option("--seed", task->seed, "generator seed (the same seed writes the same files)");
  sub->add_option("out_dir", *out_dir)->required();
  sub->callback([task, out_dir] { fmt::print("{}\n", write_algorithmic_task(*task, *out_dir)); });
}

}  // namespace fbt::cli
