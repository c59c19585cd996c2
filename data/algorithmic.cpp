#include "data/algorithmic.hpp"

#include <filesystem>
#include <stdexcept>

#include "backend/rng.hpp"
#include "data/text.hpp"
#include "util/files.hpp"

namespace fs = std::filesystem;

namespace fbt {

namespace {

constexpr const char* kNames[] = {"x", "y", "z", "p", "r"};
constexpr int kMinValue = 1, kMaxValue = 10;
constexpr const char* kIgnore = "_";

// The state of a program being drawn: each variable's value, 0 while unassigned.
class ProgramWriter {
 public:
  ProgramWriter(int64_t variables, bool every_statement, Rng& rng)
      : values_(size_t(variables), 0), every_statement_(every_statement), rng_(rng) {}

  // Draws kinds and variables until one statement applies, and appends it.
  void statement() {
    while (!try_statement(int(draw(5)), /*nested=*/false)) {
    }
  }
  Program finish() {
    emit("END");
    return std::move(program_);
  }

 private:
  enum Kind { Assign, Increment, Decrement, Print, If };

  int64_t draw(int64_t n) { return std::min<int64_t>(n - 1, int64_t(rng_.uniform() * float(n))); }
  int64_t constant() { return kMinValue + draw(kMaxValue - kMinValue + 1); }
  void emit(const std::string& token, const std::string& label = kIgnore) {
    program_.tokens.push_back(token);
    program_.labels.push_back(label);
  }
  // Whether statement `kind` on variable v applies now.
  bool applies(int kind, size_t v) const {
    switch (kind) {
      case Assign: return values_[v] == 0;
      case Increment: return values_[v] != 0 && values_[v] < kMaxValue;
      case Decrement: return values_[v] != 0 && values_[v] > kMinValue;
      default: return values_[v] != 0;  // print and if read v
    }
  }
  // Emits the simple statement (assign, increment, decrement) on v; changes the state if `run`.
  void simple(int kind, size_t v, bool run) {
    emit(kNames[v]);
    if (kind == Assign) {
      const int64_t k = constant();
      emit("="), emit(std::to_string(k));
      if (run) values_[v] = k;
    } else {
      emit(kind == Increment ? "++" : "--");
      if (run) values_[v] += kind == Increment ? 1 : -1;
    }
    // (an assignment under a false condition leaves v unassigned: nothing to label)
    emit(";", every_statement_ && values_[v] != 0 ? std::to_string(values_[v]) : kIgnore);
  }
  bool try_statement(int kind, bool nested) {
    const size_t v = size_t(draw(int64_t(values_.size())));
    if (!applies(kind, v)) return false;
    if (kind == Print) {
      emit("print"), emit(kNames[v]), emit(";", std::to_string(values_[v]));
    } else if (kind == If) {
      conditional(v);
    } else {
      simple(kind, v, true);
    }
    return true;
  }
  // if v < w : S  or  if v > w : S
  void conditional(size_t v) {
    std::vector<size_t> others;
    for (size_t u = 0; u < values_.size(); ++u)
      if (u != v && values_[u] != 0) others.push_back(u);
    const bool use_variable = !others.empty() && draw(2) == 0;
    const size_t w = use_variable ? others[size_t(draw(int64_t(others.size())))] : 0;
    const int64_t rhs = use_variable ? values_[w] : constant();
    const bool less = draw(2) == 0;
    emit("if"), emit(kNames[v]), emit(less ? "<" : ">"), emit(use_variable ? kNames[w] : std::to_string(rhs)), emit(":");
    const bool holds = less ? values_[v] < rhs : values_[v] > rhs;
    while (true) {  // the body: an assignment, increment or decrement that applies
      const int kind = int(draw(3));
      const size_t u = size_t(draw(int64_t(values_.size())));
      if (!applies(kind, u)) continue;
      simple(kind, u, holds);
      return;
    }
  }

  std::vector<int64_t> values_;
  bool every_statement_;  // label every `;`, not only the prints'
  Rng& rng_;
  Program program_;
};

void write_split(const std::string& path, const std::vector<Program>& programs) {
  std::string text, labels;
  for (const Program& p : programs) {
    for (size_t i = 0; i < p.tokens.size(); ++i) {
      text += (i ? " " : "") + p.tokens[i];
      labels += (i ? " " : "") + p.labels[i];
    }
    text += "\n", labels += "\n";
  }
  write_text_atomic(path, text);
  write_text_atomic(path + ".labels", labels);
}

}  // namespace

std::vector<Program> generate_programs(const AlgorithmicTask& task, int64_t count, uint64_t seed,
                                       bool every_statement) {
  if (task.variables < 1 || task.variables > 5)
    throw std::invalid_argument("--variables: must be 1 to 5, got " + std::to_string(task.variables));
  if (task.statements < 1) throw std::invalid_argument("--statements: must be >= 1, got " + std::to_string(task.statements));
  Rng rng(seed);
  std::vector<Program> programs;
  for (int64_t i = 0; i < count; ++i) {
    ProgramWriter w(task.variables, every_statement, rng);
    for (int64_t s = 0; s < task.statements; ++s) w.statement();
    programs.push_back(w.finish());
  }
  return programs;
}

std::vector<std::string> algorithmic_vocabulary() {
  std::vector<std::string> v(std::begin(kNames), std::end(kNames));
  for (int k = kMinValue; k <= kMaxValue; ++k) v.push_back(std::to_string(k));
  for (const char* t : {"=", "++", "--", ";", "print", "if", "<", ">", ":", "END"}) v.push_back(t);
  return v;
}

std::string write_algorithmic_task(const AlgorithmicTask& task, const std::string& out_dir) {
  fs::create_directories(out_dir);
  const struct {
    const char* name;
    int64_t programs;
  } splits[] = {{"train", task.train_programs}, {"valid", 1000}, {"test", 1000}};
  int64_t tokens = 0;
  for (size_t k = 0; k < 3; ++k) {  // a seed of its own per split: its programs are independent
    const bool every_statement = task.label_every_statement && k == 0;  // train only: evaluation stays official
    const std::vector<Program> programs =
        generate_programs(task, splits[k].programs, Rng::hash(task.seed, k), every_statement);
    for (const Program& p : programs) tokens += int64_t(p.tokens.size());
    write_split((fs::path(out_dir) / (std::string(splits[k].name) + ".txt")).string(), programs);
  }
  Vocabulary(algorithmic_vocabulary()).save((fs::path(out_dir) / "vocab.txt").string());
  return std::to_string(task.variables) + " variables, " + std::to_string(task.statements) +
         " statements a program: train " + std::to_string(task.train_programs) +
         " / valid 1000 / test 1000 programs (" + std::to_string(tokens) +
         " tokens) and vocab.txt in " + out_dir +
         (task.label_every_statement ? " (train labels on every statement)" : "");
}

}  // namespace fbt
