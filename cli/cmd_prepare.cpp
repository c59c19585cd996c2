// `fbt prepare-bytes FILE OUT_DIR`: a text file as byte tokens, split train/valid/test 90/5/5.
// `fbt prepare-algorithmic --variables K OUT_DIR`: the code-execution task (data/algorithmic.hpp).
// `fbt prepare --tokenizer KIND corpus.txt OUT_DIR`: a text corpus tokenized (data/tokenizer.hpp)
// and split 90/5/5; `prepare-bytes` is its bytes case.
#include <fmt/core.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "data/algorithmic.hpp"
#include "data/text.hpp"
#include "data/tokenizer.hpp"
#include "data/tokens.hpp"
#include "train/progress.hpp"
#include "util/files.hpp"

namespace fs = std::filesystem;

namespace fbt::cli {

namespace {

std::string read_corpus(const std::string& input) {
  std::ifstream in(input, std::ios::binary);
  if (!in) throw std::runtime_error(input + ": cannot open");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() < 1000) throw std::runtime_error(input + ": only " + std::to_string(data.size()) + " bytes, too small to split");
  return data;
}

struct PrepareArgs {
  std::string input, out_dir, tokenizer = "bytes", tokenizer_model;
  SentencePieceOptions sp;
};

// The corpus cut 90/5/5: at the byte for byte tokens (as prepare-bytes always has), else after
// the first newline past each cut, so that no word or piece straddles two splits.
std::vector<std::string> split_corpus(const std::string& data, bool at_lines) {
  auto cut = [&](size_t at) {
    const size_t nl = at_lines ? data.find('\n', at) : std::string::npos;
    return nl == std::string::npos || nl + 1 >= data.size() ? at : nl + 1;
  };
  const size_t a = cut(data.size() * 90 / 100), b = std::max(a, cut(data.size() * 95 / 100));
  return {data.substr(0, a), data.substr(a, b - a), data.substr(b)};
}

// Ids of a split, encoded a chunk of lines at a time (with a progress bar on a terminal).
std::vector<int32_t> encode_split(const Tokenizer& tok, const std::string& text, const std::string& name) {
  std::vector<int32_t> ids;
  Progress bar("encoding " + name + " (MB)", int64_t(text.size() >> 20));
  constexpr size_t kChunk = 1 << 20;
  for (size_t at = 0; at < text.size();) {
    size_t end = std::min(text.size(), at + kChunk);
    if (const size_t nl = text.find('\n', end); end < text.size() && nl != std::string::npos) end = nl + 1;
    const std::vector<int32_t> part = tok.encode(text.substr(at, end - at), name);
    ids.insert(ids.end(), part.begin(), part.end());
    at = end;
    bar.update(int64_t(at >> 20));
  }
  bar.clear();
  return ids;
}

// The tokenizer file in out_dir: trained, copied from --tokenizer-model, or a word vocabulary.
std::string make_tokenizer_file(const PrepareArgs& a, const std::string& corpus, const std::string& train_text) {
  const fs::path out(a.out_dir);
  if (a.tokenizer == "bytes") return "";
  if (a.tokenizer == "words") {
    const std::string path = (out / "vocab.txt").string();
    if (!a.tokenizer_model.empty()) fs::copy_file(a.tokenizer_model, path, fs::copy_options::overwrite_existing);
    else Vocabulary(word_vocabulary(corpus), path).save(path);
    return path;
  }
  const std::string path = (out / "tokenizer.model").string();
  if (!a.tokenizer_model.empty()) {
    load_tokenizer("sentencepiece", a.tokenizer_model);  // a bad file is refused before it is copied
    fs::copy_file(a.tokenizer_model, path, fs::copy_options::overwrite_existing);
    return path;
  }
  const std::string text_path = (out / "train.txt.tmp").string();  // the tokenizer sees the train split only
  write_text_atomic(text_path, train_text);
  fmt::print("training a SentencePiece {} model of {} pieces on {} ({:.1f} MB)\n", a.sp.model_type, a.sp.vocab_size,
             a.input, double(train_text.size()) / 1e6);
  std::fflush(stdout);
  try {
    train_sentencepiece(text_path, path, a.sp);
  } catch (const DataError& e) {
    fs::remove(text_path);
    throw DataError(a.input + ": " + std::string(e.what()).substr(text_path.size() + 2));
  }
  fs::remove(text_path);
  return path;
}

void run_prepare(const PrepareArgs& a) {
  const std::string corpus = read_corpus(a.input);
  fs::create_directories(a.out_dir);
  const std::vector<std::string> parts = split_corpus(corpus, a.tokenizer != "bytes");
  const std::string file = make_tokenizer_file(a, corpus, parts[0]);
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(a.tokenizer, file);
  const std::string format = a.tokenizer == "bytes" ? "bytes" : tok->size() <= 65536 ? "u16" : "u32";
  const char* names[] = {"train", "valid", "test"};
  std::string counts;
  for (size_t k = 0; k < 3; ++k) {
    const std::string path = (fs::path(a.out_dir) / (std::string(names[k]) + ".bin")).string();
    if (format == "bytes") {
      write_file_atomic(path, parts[k].data(), parts[k].size());
      counts += fmt::format("{}{} {}", k ? " / " : "", names[k], parts[k].size());
      continue;
    }
    const std::vector<int32_t> ids = encode_split(*tok, parts[k], a.input + " (" + names[k] + ")");
    std::vector<uint8_t> bytes;
    for (int32_t id : ids)
      for (int i = 0; i < (format == "u16" ? 2 : 4); ++i) bytes.push_back(uint8_t(uint32_t(id) >> (8 * i)));
    write_file_atomic(path, bytes.data(), bytes.size());
    counts += fmt::format("{}{} {}", k ? " / " : "", names[k], ids.size());
  }
  fmt::print("{}: {} bytes -> {} tokens ({}, {} ids, format {}) in {}\n", a.input, corpus.size(), counts, a.tokenizer,
             tok->size(), format, a.out_dir);
  fmt::print("data:\n  format: {}\n", format);
  if (!file.empty()) fmt::print("  tokenizer: {}\n  tokenizer_model: {}\n", a.tokenizer, file);
  fmt::print("  train: {0}/train.bin\n  valid: {0}/valid.bin\n  test: {0}/test.bin\n(model.num_tokens: {1})\n",
             a.out_dir, tok->size());
}

}  // namespace

void add_prepare_bytes(CLI::App& app) {
  auto a = std::make_shared<PrepareArgs>();
  CLI::App* sub = app.add_subcommand("prepare-bytes", "split a text file into train/valid/test.bin (90/5/5), byte tokens");
  sub->add_option("input", a->input)->required()->check(CLI::ExistingFile);
  sub->add_option("out_dir", a->out_dir)->required();
  sub->callback([a] { run_prepare(*a); });
}

void add_prepare(CLI::App& app) {
  auto a = std::make_shared<PrepareArgs>();
  CLI::App* sub = app.add_subcommand(
      "prepare", "tokenize a text file into train/valid/test.bin (90/5/5) with bytes, words or SentencePiece");
  sub->add_option("--tokenizer", a->tokenizer, "bytes | words | sentencepiece")
      ->check(CLI::IsMember({"bytes", "words", "sentencepiece"}));
  sub->add_option("--vocab-size", a->sp.vocab_size, "SentencePiece pieces to train (default 8000)")->check(at_least(1));
  sub->add_option("--model-type", a->sp.model_type, "SentencePiece algorithm: bpe | unigram")
      ->check(CLI::IsMember({"bpe", "unigram"}));
  sub->add_option("--tokenizer-model", a->tokenizer_model,
                  "use this SentencePiece .model (or, for words, vocabulary) instead of training one")
      ->check(CLI::ExistingFile);
  sub->add_option("input", a->input)->required()->check(CLI::ExistingFile);
  sub->add_option("out_dir", a->out_dir)->required();
  sub->callback([a] {
    if (a->tokenizer == "bytes" && !a->tokenizer_model.empty())
      throw std::invalid_argument("--tokenizer-model does not apply to --tokenizer bytes");
    run_prepare(*a);
  });
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
  sub->add_flag("--label-every-statement", task->label_every_statement,
                "label every statement's `;` in train.txt.labels (the value it leaves), not only the prints'");
  sub->add_option("out_dir", *out_dir)->required();
  sub->callback([task, out_dir] { fmt::print("{}\n", write_algorithmic_task(*task, *out_dir)); });
}

}  // namespace fbt::cli
