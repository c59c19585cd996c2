// The subcommands of the fbt binary; main.cpp wires them to CLI11.
#pragma once
#include <string>
#include <vector>

namespace fbt::cli {

struct ForwardArgs {
  std::string config, weights, batch, out, detach = "none";
  bool grads = false;
};
int run_forward(const ForwardArgs& a);

}  // namespace fbt::cli
