// Training from Python (fbt.train, fbt.TrainLoop) and the library's settings (threads, CUDA).
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/threads.hpp"
#include "research/research.hpp"
#include "python/models.hpp"
#include "train/interrupt.hpp"
#include "train/log.hpp"

namespace fbt::python {

using namespace pybind11::literals;

namespace {

// An override's value as the config parser reads `--set key=value`.
std::string override_text(const std::string& key, py::handle v) {
  if (py::isinstance<py::bool_>(v)) return py::cast<bool>(v) ? "true" : "false";
  if (py::isinstance<py::str>(v)) return py::cast<std::string>(v);
  if (py::isinstance<py::int_>(v) || py::isinstance<py::float_>(v)) return std::string(py::repr(v));
  raise(PyExc_TypeError, "overrides['" + key + "'] must be a str, int, float or bool");
}

// fbt.train(config, overrides={...}, resume=False, stop_at=0): `fbt train`, returning the model.
// The library's log through Python's sys.stdout and sys.stderr as they are at each write (so
// notebooks and contextlib.redirect_stdout see it); progress bars only when sys.stdout is a
// terminal. Called without the GIL: each write takes it. A stream that fails to write loses the
// text, not the training run.
LogSink python_log() {
  auto writer = [](const char* stream) {
    return [stream](const std::string& text) {
      py::gil_scoped_acquire gil;
      try {
        py::object f = py::module_::import("sys").attr(stream);
        if (f.is_none()) return;
        f.attr("write")(text);
        f.attr("flush")();
      } catch (py::error_already_set& e) {
        e.discard_as_unraisable(stream);
      }
    };
  };
  bool terminal = false;
  try {
    terminal = py::module_::import("sys").attr("stdout").attr("isatty")().cast<bool>();
  } catch (py::error_already_set&) {  // no isatty: not a terminal
  }
  return {writer("stdout"), writer("stderr"), terminal};
}

std::unique_ptr<PyModel> train(const std::string& config, const py::dict& overrides, bool resume, int64_t stop_at,
                               const py::object& callback) {
  require_file(config);
  std::vector<std::string> sets;
  std::string again = "fbt.train(" + py::repr(py::str(config)).cast<std::string>();
  for (auto [k, v] : overrides) {
    const std::string key = py::cast<std::string>(k);
    sets.push_back(key + "=" + override_text(key, v));
  }
  if (!overrides.empty()) again += ", overrides=" + py::repr(overrides).cast<std::string>();
  const RunConfig cfg = load_run_config(config, sets);
  if (stop_at < 0) throw std::invalid_argument("stop_at must be >= 0");
  if (!callback.is_none() && !PyCallable_Check(callback.ptr())) throw py::type_error("callback must be callable");
  const py::object loads = py::module_::import("json").attr("loads");
  std::unique_ptr<py::error_already_set> raised;  // the callback's exception, raised again once the run stopped
  const LogRoute route(python_log());
  const bool finished = without_gil([&] {
    Trainer trainer(cfg);
    trainer.set_resume_command(again + ", resume=True)");
    if (cfg.train.probe_every) {
      const DetachPolicy policy = loop_config(cfg).detach;
      trainer.set_probe([policy](Model& m, const CallBatch& batch, int64_t step) {
        return probe_metrics(m, batch, policy, step);
      });
    }
    if (!callback.is_none())
      trainer.set_on_record([&](const std::string& line) {
        py::gil_scoped_acquire gil;
        if (raised) return;  // stopping already
        try {
          callback(loads(line));
        } catch (py::error_already_set& e) {  // stop as Ctrl-C does: the step ends, a checkpoint is written
          raised = std::make_unique<py::error_already_set>(std::move(e));
          request_stop();
        }
      });
    return trainer.run(resume, stop_at);
  });
  if (raised) throw *raised;
  // Stopped early (stop_at, Ctrl-C): the newest checkpoint, which resume=True continues from.
  const std::string weights = finished ? cfg.train.out_dir : latest_checkpoint(cfg.train.out_dir);
  if (weights.empty()) throw std::runtime_error(cfg.train.out_dir + ": the run stopped before its first checkpoint");
  return load(weights);
}

LoopConfig loop_settings(double lr, int64_t warmup, int64_t total_steps, const std::string& schedule, double min_lr,
                         double clip, double weight_decay, std::pair<double, double> betas, double eps,
                         const std::string& detach, uint64_t seed, int64_t grad_accum, bool recompute,
                         double adapt_span_loss, const Model& model) {
  if (schedule != "constant" && schedule != "cosine")
    throw std::invalid_argument("schedule: '" + schedule + "' is not one of constant, cosine");
  if (schedule == "cosine" && total_steps <= 0) throw std::invalid_argument("schedule cosine needs total_steps > 0");
  const auto [bad_key, problem] =
      optimizer_setting_error({lr, min_lr, weight_decay, betas.first, betas.second, eps, clip, warmup});
  if (!bad_key.empty()) throw std::invalid_argument((bad_key == "beta1" || bad_key == "beta2" ? "betas" : bad_key) + ": " + problem);
  LoopConfig c;
  c.lr = lr, c.warmup = warmup, c.total_steps = total_steps, c.cosine = schedule == "cosine", c.min_lr = min_lr;
  c.clip = clip;
  c.adam.beta1 = betas.first, c.adam.beta2 = betas.second, c.adam.eps = eps, c.adam.weight_decay = weight_decay;
  c.detach = detach_policy(model, detach);
  c.seed = seed;
  if (grad_accum < 1) throw std::invalid_argument("grad_accum must be >= 1");
  c.grad_accum = grad_accum;
  c.recompute = recompute;
  if (!(adapt_span_loss >= 0 && std::isfinite(adapt_span_loss))) throw std::invalid_argument("adapt_span_loss must be >= 0");
  if (adapt_span_loss > 0 && !model.config().adapt_span)
    throw std::invalid_argument("adapt_span_loss needs a model with adapt_span=True (there are no spans to train)");
  c.adapt_span_loss = adapt_span_loss;
  return c;
}

// fbt.TrainLoop(model, ...): a training step on the user's own arrays; it keeps its model alive.
struct PyTrainLoop {
  PyTrainLoop(PyModel& model, const LoopConfig& c) : pm(&model), loop(*model.model, c) {}
  PyModel* pm;
  TrainLoop loop;
};

py::dict step_result(const StepStats& s) {
  return py::dict("loss"_a = s.loss, "grad_norm"_a = s.grad_norm, "lr"_a = s.lr, "skipped"_a = s.skipped,
                  "fault"_a = s.fault, "span_loss"_a = s.span_loss);
}

// TrainLoop.step(x, y)
py::dict train_step(PyTrainLoop& t, py::handle x, py::handle y) {
  const ModelConfig& c = t.pm->model->config();
  int64_t B = -1, T = 0;
  const std::vector<int32_t> xs = token_ids(x, "x", c.num_tokens, false, &B, &T);
  const std::vector<int32_t> ys = token_ids(y, "y", c.num_tokens, true, &B, &T);
  return step_result(without_gil([&] { return t.loop.step(xs.data(), ys.data(), B, T); }));
}

// TrainLoop.memory: the state carried into the next step, or None.
py::object carried_memory(const PyTrainLoop& t) {
  if (t.loop.memory_rows() == 0) return py::none();
  const std::vector<float> v = t.loop.memory();
  const int64_t D = t.pm->model->config().dim, rows = t.loop.memory_rows();
  const int64_t per_stream = is_baseline(*t.pm->model) ? t.pm->model->config().depth * rows * D : rows * D;
  const Shape s = t.pm->model->memory_shape(int64_t(v.size()) / per_stream, rows);
  return py::array_t<float>(s.dims(), v.data());
}

void define_train_loop(py::module_& m) {
  const LoopConfig d;
  py::class_<PyTrainLoop>(m, "TrainLoop",
      "One training step at a time on your own arrays: forward with dropout, backward under the detachment "
      "policy, clipping, the schedule, AdamW, and each row's memory carried into the next step; grad_accum "
      "splits a step's rows into that many micro-batches, their gradients summed in order; recompute keeps "
      "only each group of windows' outputs and recomputes the rest in the backward (the same numbers, less memory); "
      "adapt_span_loss weighs the adaptive-span term (a model with adapt_span=True; spans clamped to [0, 1] after "
      "each step).")
      .def(py::init([](PyModel& pm, double lr, int64_t warmup, int64_t total_steps, const std::string& schedule,
                       double min_lr, double clip, double weight_decay, std::pair<double, double> betas, double eps,
                       const std::string& detach, uint64_t seed, int64_t grad_accum, bool recompute,
                       double adapt_span_loss) {
             const LoopConfig c = loop_settings(lr, warmup, total_steps, schedule, min_lr, clip, weight_decay, betas,
                                                eps, detach, seed, grad_accum, recompute, adapt_span_loss, *pm.model);
             return std::make_unique<PyTrainLoop>(pm, c);
           }),
           py::keep_alive<1, 2>(), "model"_a, py::kw_only(), "lr"_a = d.lr, "warmup"_a = d.warmup,
           "total_steps"_a = d.total_steps, "schedule"_a = "constant", "min_lr"_a = d.min_lr, "clip"_a = d.clip,
           "weight_decay"_a = d.adam.weight_decay, "betas"_a = std::make_pair(d.adam.beta1, d.adam.beta2),
           "eps"_a = d.adam.eps, "detach"_a = "none", "seed"_a = d.seed, "grad_accum"_a = d.grad_accum,
           "recompute"_a = d.recompute, "adapt_span_loss"_a = d.adapt_span_loss)
      .def("step", &train_step, "x"_a, "y"_a,
           "One optimizer step on inputs x and targets y (B, T) (-1: no target); returns {'loss', 'grad_norm', "
           "'lr', 'skipped', 'fault', 'span_loss'} (loss: the cross-entropy; span_loss: the adaptive-span term the "
           "objective adds, 0 without one). Row b continues from the memory row b ended with in the previous step.")
      .def("reset_memory", [](PyTrainLoop& t) { t.loop.reset_memory(); }, "Every row starts without memory next step.")
      .def_property_readonly("steps_done", [](const PyTrainLoop& t) { return t.loop.steps_done(); })
      .def_property_readonly("memory", &carried_memory, "The memory carried into the next step, or None.");
}

}  // namespace

void define_training(py::module_& m) {
  m.def("train", &train, "config"_a, py::kw_only(), "overrides"_a = py::dict(), "resume"_a = false, "stop_at"_a = 0,
        "callback"_a = py::none(),
        "`fbt train CONFIG`: trains from a YAML run config (overrides: {'train.steps': 200, ...}, as --set), with "
        "its log on sys.stdout; returns the trained model (stopped early: the newest checkpoint's). callback(record) "
        "gets each metrics record (a metrics.jsonl line as a dict) as it is written; an exception it raises stops "
        "the run with a checkpoint, as Ctrl-C does, and is raised again here.");
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw std::invalid_argument("threads must be >= 1");
    threads::set_max(n);
  }, "n"_a, "Threads for the library's parallel work (default: all cores).");
  m.def("get_num_threads", [] { return threads::max_threads(); });
  m.def("cuda_available", [] { return device_available(Device::CUDA); },
        "Whether model.to('cuda') can work here (fbt built with CUDA and a GPU present).");
  define_train_loop(m);
}

}  // namespace fbt::python
