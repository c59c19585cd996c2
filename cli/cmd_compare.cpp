// `fbt compare A B`: two weights files (or the run folders and checkpoints holding them) tensor by
// tensor, bit for bit: each tensor that differs with its largest difference, then one verdict
// line. Exit status 0 when every tensor is identical, 1 when any differs (the determinism checks,
// `./run algorithmic --check`, rely on it).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include "cli/commands.hpp"
#include "util/safetensors.hpp"

namespace fbt::cli {

namespace {

// A weights file, or model.safetensors in the folder given (an out_dir or a checkpoint).
std::string weights_path(const std::string& p) {
  return std::filesystem::is_directory(p) ? (std::filesystem::path(p) / "model.safetensors").string() : p;
}

// Whether a and b hold the same tensors bit for bit; prints each difference.
bool compare(const std::string& a_path, const std::string& b_path) {
  const SafeTensors a = SafeTensors::load(a_path), b = SafeTensors::load(b_path);
  std::set<std::string> names;
  for (const auto& [n, t] : a.tensors) names.insert(n);
  for (const auto& [n, t] : b.tensors) names.insert(n);
  int64_t differ = 0, values = 0;
  for (const std::string& n : names) {
    if (!a.has(n) || !b.has(n)) {
      fmt::print("differs: {}: only in {}\n", n, a.has(n) ? a_path : b_path);
      ++differ;
      continue;
    }
    const StTensor &x = a.at(n), &y = b.at(n);
    if (x.dtype != y.dtype || x.shape != y.shape) {
      fmt::print("differs: {}: {} {} against {} {}\n", n, x.dtype, fmt::join(x.shape, "x"), y.dtype, fmt::join(y.shape, "x"));
      ++differ;
      continue;
    }
    values += x.numel();
    if (x.bytes == y.bytes) continue;
    ++differ;
    if (x.dtype != "F32") {
      fmt::print("differs: {}: {} bytes not equal\n", n, x.dtype);
      continue;
    }
    const std::vector<float> u = x.to_f32(n), v = y.to_f32(n);
    double worst = 0;
    int64_t count = 0;
    for (size_t i = 0; i < u.size(); ++i)
      if (std::memcmp(&u[i], &v[i], sizeof(float)) != 0) {
        ++count;
        worst = std::max(worst, std::fabs(double(u[i]) - double(v[i])));
      }
    fmt::print("differs: {}: {} of {} values, max |a - b| {:.3g}\n", n, count, u.size(), worst);
  }
  if (differ == 0) fmt::print("identical: {} tensors, {} values, bit for bit\n", names.size(), values);
  else fmt::print("different: {} of {} tensors differ\n", differ, names.size());
  return differ == 0;
}

}  // namespace

void add_compare(CLI::App& app) {
  auto paths = std::make_shared<std::vector<std::string>>();
  CLI::App* sub = app.add_subcommand("compare", "compare two weights files (or runs, checkpoints) tensor by tensor, bit for bit");
  sub->add_option("weights", *paths, "two safetensors files, run out_dirs or checkpoint folders")->required()->expected(2);
  sub->callback([paths] {
    if (!compare(weights_path((*paths)[0]), weights_path((*paths)[1]))) std::exit(1);
  });
}

}  // namespace fbt::cli
