// `fbt spans WEIGHTS`: the adaptive spans a model learned (MODEL.md "Adaptive attention span"):
// every head's span in steps (z * mem_len) by layer, each layer's mean, and how far back the
// model reads with them; --json for programs.
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "cli/commands.hpp"
#include "train/checkpoint.hpp"

namespace fbt::cli {

namespace {

void print_spans(const std::string& source, bool json) {
  const std::unique_ptr<Model> model = load_model(source);
  const ModelConfig& c = model->config();
  if (!c.adapt_span)
    throw std::runtime_error(resolve_weights(source) + ": the model has no adaptive span (model.adapt_span is false)");
  const std::vector<std::vector<float>> spans = model->spans();
  const int64_t reach = std::min(c.mem_len, model->span_reach());
  if (json) {
    fmt::print("{}\n", nlohmann::json{{"weights", resolve_weights(source)}, {"mem_len", c.mem_len},
                                      {"adapt_span_ramp", c.adapt_span_ramp}, {"spans", spans}, {"reach", reach}}
                           .dump());
    return;
  }
  fmt::print("{}: spans in steps (span ratio x mem_len {}; soft edge {} steps)\n", resolve_weights(source), c.mem_len,
             c.adapt_span_ramp);
  fmt::print("{:>5} {:>8} | {}\n", "layer", "mean", "heads");
  const std::vector<double> means = Model::mean_spans(spans);
  for (size_t l = 0; l < spans.size(); ++l) fmt::print("{:>5} {:>8.1f} | {:.1f}\n", l, means[l], fmt::join(spans[l], " "));
  fmt::print("attention reads the last {} of {} memory steps\n", reach, c.mem_len);
}

}  // namespace

void add_spans(CLI::App& app) {
  auto source = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand("spans", "print the adaptive attention spans a model learned, by layer and head");
  sub->add_option("weights", *source, "a safetensors file, a run's out_dir or a checkpoint folder")->required();
  sub->add_flag("--json", *json, "one JSON object instead of the table");
  sub->callback([source, json] { print_spans(*source, *json); });
}

}  // namespace fbt::cli
