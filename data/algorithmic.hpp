// The paper's algorithmic "code execution" task, as the official generator makes it: programs of
// N statements over K variables (the first K of x y z p r, values 1..10), one program a line, and
// labels beside them: every token `_` except the `;` of `print v ;`, labelled with v's value then.
// A model that predicts the labels must track the state of every variable through the program.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fbt {

struct AlgorithmicTask {
  int64_t variables = 3;    // K, 1..5
  int64_t statements = 100;  // N per program
  uint64_t seed = 1;
  int64_t train_programs = 10000;  // the official count; short programs need more to not be memorized
  // Labels of the train split on every statement's `;` (the value, after the statement, of the
  // variable it assigns, changes or prints) instead of on prints alone: a denser training signal
  // for the same state tracking. Valid and test keep the official print labels.
  bool label_every_statement = false;
};

// One program: its tokens (ending with END) and a label per token.
struct Program {
  std::vector<std::string> tokens, labels;
};

// `count` programs drawn with generator seed `seed`. Each statement is drawn uniformly among
// `v = k ;` (v not yet assigned), `v ++ ;` (v below 10), `v -- ;` (v above 1), `print v ;` and
// `if v < w : S` / `if v > w : S` (w another assigned variable or a constant 1..10, 50/50; S one
// assignment, increment or decrement, which changes the state only when the condition holds),
// v uniform among the K variables; a statement that cannot apply is drawn again.
// `every_statement`: every statement's `;` is labelled, not only the prints'.
std::vector<Program> generate_programs(const AlgorithmicTask& task, int64_t count, uint64_t seed,
                                       bool every_statement = false);

// Every token the task's inputs and labels can use (all five variables, values, keywords, END), in a
// fixed order whatever the number of variables: data of 1, 3 or 5 variables share its ids, so a
// curriculum's stages (configs/algorithmic/) carry their weights from one to the next.
std::vector<std::string> algorithmic_vocabulary();

// OUT_DIR/{train,valid,test}.txt with .labels beside them (task.train_programs / 1,000 / 1,000 programs, each
// split from its own seed derived from task.seed) and OUT_DIR/vocab.txt. Returns a summary line.
std::string write_algorithmic_task(const AlgorithmicTask& task, const std::string& out_dir);

}  // namespace fbt
