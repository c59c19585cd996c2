// The Python module `fbt`: the seed's usage (feedback-transformer-pytorch) over the C++ library,
// with numpy arrays in place of torch tensors. docs/PYTHON.md documents it, tests/python/ tests it.
//
// The boundary's rules, in one place each:
//  - arrays are checked here (dtype kind, rank, shape, id range) and name the argument;
//  - every call into the library runs without the GIL and one at a time (without_gil);
//  - C++ errors arrive as Python exceptions with the same one-line message (translate_errors).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <sstream>

#include "fbt/fbt.hpp"
#include "backend/cuda/kernels.hpp"
#include "backend/threads.hpp"
#include "research/research.hpp"
#include "train/interrupt.hpp"
#include "train/log.hpp"
#include "util/config_section.hpp"
#include "util/files.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace fbt::python {

namespace {

// ---- the boundary's rules ----------------------------------------------------------------------

// Runs f without the GIL (other Python threads go on meanwhile), one library call at a time: a
// model's parameters and gradients are shared state.
template <class F>
auto without_gil(F&& f) {
  static std::mutex one_at_a_time;
  py::gil_scoped_release release;
  const std::lock_guard<std::mutex> lock(one_at_a_time);
  return f();
}

// The library's errors as the Python exceptions a user expects: bad configs and values as
// ValueError (std::invalid_argument is pybind11's ValueError already), files as OSError.
void translate_errors() {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ConfigError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const SafeTensorsError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const DataError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const FileError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    }
  });
}

template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

[[noreturn]] void raise(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw py::error_already_set();
}

void require_file(const std::string& path) {
  if (!std::filesystem::exists(path)) raise(PyExc_FileNotFoundError, path + ": no such file or directory");
}

std::string shape_text(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Token ids (any integer dtype, or a nested list) of shape (B, T). With `ignore`, kNoTarget (-1)
// marks a position without a target.
std::vector<int32_t> token_ids(py::handle obj, const char* name, int64_t num_tokens, bool ignore, int64_t* B,
                               int64_t* T) {
  py::array any = py::array::ensure(obj);
  if (!any) raise(PyExc_TypeError, std::string(name) + " must be an array of token ids");
  const char kind = any.dtype().kind();
  if (kind != 'i' && kind != 'u')
    raise(PyExc_TypeError, std::string(name) + " must hold integer token ids, got dtype " +
                               std::string(py::str(any.dtype())));
  if (any.ndim() != 2) raise(PyExc_ValueError, std::string(name) + " must be (batch, time), got shape " + shape_text(any));
  if (*B >= 0 && (any.shape(0) != *B || any.shape(1) != *T))
    raise(PyExc_ValueError, std::string(name) + " has shape " + shape_text(any) + ", the inputs (" +
                                std::to_string(*B) + ", " + std::to_string(*T) + ")");
  if (any.shape(0) < 1 || any.shape(1) < 1) raise(PyExc_ValueError, std::string(name) + " is empty: shape " + shape_text(any));
  *B = any.shape(0), *T = any.shape(1);
  const auto ids = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(any);
  const int64_t* v = ids.data();
  std::vector<int32_t> out(size_t(ids.size()));
  for (size_t i = 0; i < out.size(); ++i) {
    if ((v[i] < 0 || v[i] >= num_tokens) && !(ignore && v[i] == kNoTarget))
      raise(PyExc_ValueError, std::string(name) + "[" + std::to_string(int64_t(i) / *T) + ", " +
                                  std::to_string(int64_t(i) % *T) + "] = " + std::to_string(v[i]) +
                                  " is outside [0, num_tokens=" + std::to_string(num_tokens) + ")" +
                                  (ignore ? " (-1: no target)" : ""));
    out[i] = int32_t(v[i]);
  }
  return out;
}

// A float array of exactly `dims` (any floating dtype; float32 C-contiguous is read in place).
py::array_t<float, py::array::c_style | py::array::forcecast> floats(py::handle obj, const std::string& name,
                                                                    const std::vector<int64_t>& dims,
                                                                    const std::string& expected) {
  py::array any = py::array::ensure(obj);
  if (!any || any.dtype().kind() != 'f')
    raise(PyExc_TypeError, name + " must be a floating-point array" +
                               (any ? ", got dtype " + std::string(py::str(any.dtype())) : std::string()));
  bool same = any.ndim() == py::ssize_t(dims.size());
  for (size_t i = 0; same && i < dims.size(); ++i) same = any.shape(py::ssize_t(i)) == dims[i];
  if (!same) raise(PyExc_ValueError, name + " must be " + expected + ", got shape " + shape_text(any));
  return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(any);
}

// The arguments of a call as the library takes them (models/call_batch.hpp). y: None or targets.
CallBatch call_batch(const Model& model, py::handle x, py::handle y, py::handle memory, py::handle context) {
  const ModelConfig& c = model.config();
  CallBatch b;
  b.B = -1;
  b.tokens = token_ids(x, "x", c.num_tokens, false, &b.B, &b.T);
  if (!y.is_none()) b.targets = token_ids(y, "y", c.num_tokens, true, &b.B, &b.T);
  if (!memory.is_none()) {
    const py::array m = py::array::ensure(memory);
    const int rows_axis = int(model.memory_shape(b.B, 1).nd) - 2;
    const int64_t rows = m && m.ndim() == rows_axis + 2 ? m.shape(rows_axis) : -1;
    const std::string expected = c.type == "transformer_xl"
                                     ? cat("(depth=", c.depth, ", batch=", b.B, ", rows <= mem_len=", c.mem_len,
                                                 ", dim=", c.dim, ")")
                                     : cat("(batch=", b.B, ", rows <= mem_len=", c.mem_len, ", dim=", c.dim, ")");
    const auto values = floats(memory, "memory", rows >= 1 && rows <= c.mem_len ? model.memory_shape(b.B, rows).dims()
                                                                                 : std::vector<int64_t>{-1},
                               expected);
    b.memory.assign(values.data(), values.data() + values.size());
    b.memory_rows = rows;
  }
  if (!context.is_none()) {
    const py::array a = py::array::ensure(context);
    const int64_t rows = a && a.ndim() == 3 && a.shape(1) >= 1 ? a.shape(1) : -1;
    const auto values = floats(context, "context", {b.B, rows, c.dim},
                               cat("(batch=", b.B, ", context rows >= 1, dim=", c.dim, ")"));
    b.context.assign(values.data(), values.data() + values.size());
    b.context_rows = rows;
  }
  return b;
}

DetachPolicy detach_policy(const Model& model, const std::string& text) {
  try {
    return DetachPolicy::parse(text, model.config().seq_len);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("detach: ") + e.what());
  }
}

py::array_t<float> new_array(const std::vector<int64_t>& dims) { return py::array_t<float>(dims); }

// ---- models ------------------------------------------------------------------------------------

// A model as Python holds it: the library's model, its mode (train: dropout on) and the dropout
// generator. Subclassed once per family so Python sees FeedbackTransformer or TransformerXL.
struct PyModel {
  std::unique_ptr<Model> model;
  bool training = false;
  Rng dropout{0};
  virtual ~PyModel() = default;
};
struct PyFeedbackTransformer : PyModel {};
struct PyTransformerXL : PyModel {};

std::unique_ptr<PyModel> wrap(std::unique_ptr<Model> m) {
  std::unique_ptr<PyModel> p;
  if (is_baseline(*m)) p = std::make_unique<PyTransformerXL>();
  else p = std::make_unique<PyFeedbackTransformer>();
  p->model = std::move(m);
  return p;
}

// A model class's keywords: the model config's fields (model_fields(), MODEL.md's names) that its
// type has.
bool has_field(const std::string& type, const ModelField& f) { return type != "transformer_xl" || !f.feedback_only; }

template <class T>
const char* python_kind() {
  if constexpr (std::is_same_v<T, bool>) return "a bool";
  else if constexpr (std::is_same_v<T, float>) return "a float";
  else return "an int";
}

// A model built from keywords, as the seed's constructors take them; `seed` draws the initial
// weights. Unknown keywords are a TypeError, as Python's own calls make them.
const char* class_name(const std::string& type) {
  return type == "transformer_xl" ? "TransformerXL" : "FeedbackTransformer";
}

std::unique_ptr<PyModel> build(const std::string& type, const py::kwargs& kw) {
  const char* cls = class_name(type);
  ModelConfig c;
  c.type = type;
  if (type == "transformer_xl") c.shared_kv = false;
  uint64_t seed = 0;
  std::string init = "gpt2";
  const std::vector<ModelField>& fields = model_fields();
  for (auto [key, value] : kw) {
    const std::string name = py::cast<std::string>(key);
    auto f = std::find_if(fields.begin(), fields.end(), [&](const ModelField& x) { return name == x.key; });
    if (name == "seed") {
      seed = py::cast<uint64_t>(value);
      continue;
    }
    if (name == "init") {  // checked by Model::init below (std::invalid_argument: ValueError)
      init = py::cast<std::string>(value);
      continue;
    }
    if (f == fields.end() || !has_field(type, *f))
      raise(PyExc_TypeError, std::string(cls) + "() got an unexpected keyword argument '" + name + "'");
    std::visit(
        [&](auto member) {
          using T = std::remove_reference_t<decltype(c.*member)>;
          try {
            c.*member = py::cast<T>(value);
          } catch (const py::cast_error&) {
            raise(PyExc_TypeError, std::string(cls) + "(): " + name + " must be " + python_kind<T>() + ", got " +
                                       std::string(py::str(py::type::of(value).attr("__name__"))));
          }
        },
        f->member);
  }
  for (const ModelField& f : fields)
    if (f.required && !kw.contains(f.key))
      raise(PyExc_TypeError, std::string(cls) + "() missing required keyword argument '" + f.key + "'");
  c.validate();  // std::invalid_argument naming the field: ValueError
  auto m = make_model(c, /*initialize=*/false);
  m->init(seed, init);
  return wrap(std::move(m));
}

// A float field as the double Python shows: its shortest decimal (0.1, not 0.10000000149).
double shortest(float x) {
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof(buf), x).ptr;
  return std::stod(std::string(buf, end));
}

// A model class's signature for its docstring: its required keywords, then the others with their
// defaults (MODEL.md's), then seed and init.
std::string signature(const std::string& type) {
  ModelConfig defaults;
  defaults.shared_kv = type != "transformer_xl";
  std::string required, optional;
  for (const ModelField& f : model_fields()) {
    if (!has_field(type, f)) continue;
    if (f.required) {
      required += std::string(f.key) + ", ";
      continue;
    }
    std::visit(
        [&](auto member) {
          const auto v = defaults.*member;
          using T = std::remove_cv_t<decltype(v)>;
          std::string shown;
          if constexpr (std::is_same_v<T, bool>) shown = v ? "True" : "False";
          else if constexpr (std::is_same_v<T, float>) shown = std::string(py::str(py::float_(shortest(v))));
          else shown = std::to_string(v);
          optional += std::string(f.key) + "=" + shown + ", ";
        },
        f.member);
  }
  return std::string(class_name(type)) + "(*, " + required + optional + "seed=0, init='gpt2')";
}

// The constructor of a model class: keywords only, as the seed's.
template <class PyClass>
auto keyword_constructor(const char* type) {
  return py::init([type](const py::args& args, const py::kwargs& kw) {
    if (!args.empty()) raise(PyExc_TypeError, std::string(class_name(type)) + "() takes keyword arguments only");
    return std::unique_ptr<PyClass>(static_cast<PyClass*>(build(type, kw).release()));
  });
}

py::dict config_dict(const ModelConfig& c) {
  py::dict d;
  d["type"] = c.type;
  for (const ModelField& f : model_fields())
    if (has_field(c.type, f))
      std::visit(
          [&](auto member) {
            if constexpr (std::is_same_v<std::remove_reference_t<decltype(c.*member)>, float>) d[f.key] = shortest(c.*member);
            else d[f.key] = c.*member;
          },
          f.member);
  return d;
}

// The rows a call leaves in the memory (MODEL.md: the newest min(mem_len, m + T)).
int64_t rows_after(const Model& model, const CallBatch& b) {
  return std::min(model.config().mem_len, b.memory_rows + b.T);
}

// model(x, memory=None, context=None, return_memory=False): logits (B, T, V) [, memory after].
py::object call(PyModel& pm, py::handle x, py::handle memory, py::handle context, bool return_memory) {
  Model& model = *pm.model;
  const CallBatch b = call_batch(model, x, py::none(), memory, context);
  py::array_t<float> logits = new_array({b.B, b.T, model.config().num_tokens});
  py::array_t<float> after = new_array(model.memory_shape(b.B, rows_after(model, b)).dims());
  float* logits_out = logits.mutable_data();
  float* memory_out = after.mutable_data();
  without_gil([&] {
    const StepScope step(model.device());
    const NoGradScope no_grad;
    const ForwardOutput o = forward_batch(model, b, DetachPolicy{}, false, pm.training ? &pm.dropout : nullptr);
    copy_bytes(logits_out, Device::CPU, o.logits.data(), o.logits.value().device, sizeof(float) * size_t(o.logits.value().numel()));
    if (o.memory.numel() != py::ssize_t(after.size())) throw std::logic_error("memory after the call: unexpected shape");
    copy_bytes(memory_out, Device::CPU, o.memory.data, o.memory.device, sizeof(float) * size_t(o.memory.numel()));
  });
  if (return_memory) return py::make_tuple(logits, after);
  return std::move(logits);
}

// The gradient of the loss with respect to every memory vector the call wrote: the feedback
// model's (B, T, D); the baseline's layer inputs, which its memory keeps, (L, B, T, D).
void copy_written_grads(const Model& model, const ForwardOutput& o, const CallBatch& b, float* out) {
  const int64_t D = model.config().dim, T = b.T;
  if (is_baseline(model)) {
    for (size_t l = 0; l < o.layer_inputs.size(); ++l) {
      const Tensor g = tape().grad(o.layer_inputs[l]);
      if (g.data) copy_bytes(out + l * b.B * T * D, Device::CPU, g.data, g.device, sizeof(float) * size_t(g.numel()));
    }
    return;
  }
  for (size_t w = 0; w < o.written.size(); ++w) {
    const Tensor g = tape().grad(o.written[w]);  // (B, n, D)
    if (!g.data) continue;
    const int64_t n = g.shape[1];
    for (int64_t r = 0; r < b.B; ++r)
      copy_rows(out + (r * T + o.written_start[w]) * D, D, Device::CPU, g.data + r * n * D, D, g.device, n, D);
  }
}

// model.loss_and_grads(x, y, ...): (loss, {name: gradient}, gradient by written memory vector
// [, memory after]).
py::tuple loss_and_grads(PyModel& pm, py::handle x, py::handle y, py::handle memory, py::handle context,
                         const std::string& detach, bool return_memory) {
  Model& model = *pm.model;
  const CallBatch b = call_batch(model, x, y, memory, context);
  const DetachPolicy policy = detach_policy(model, detach);
  if (is_baseline(model) && detach != "none")
    throw std::invalid_argument("detach: the transformer_xl model has no detachment policies (only \"none\")");
  ParamStore& ps = model.params();
  py::dict grads;
  std::vector<float*> grad_out;
  for (size_t i = 0; i < ps.size(); ++i) {
    py::array_t<float> g = new_array(ps.at(i).shape().dims());
    grad_out.push_back(g.mutable_data());
    grads[py::str(ps.names()[i])] = g;
  }
  const int64_t D = model.config().dim;
  const std::vector<int64_t> written_dims =
      is_baseline(model) ? std::vector<int64_t>{model.config().depth, b.B, b.T, D} : std::vector<int64_t>{b.B, b.T, D};
  py::array_t<float> written = new_array(written_dims);
  std::fill(written.mutable_data(), written.mutable_data() + written.size(), 0.f);
  float* written_out = written.mutable_data();
  py::array_t<float> after = new_array(model.memory_shape(b.B, rows_after(model, b)).dims());
  float* memory_out = after.mutable_data();
  double loss = 0;
  without_gil([&] {
    const StepScope step(model.device());
    ps.zero_grad();
    const ForwardOutput o = forward_batch(model, b, policy, true, pm.training ? &pm.dropout : nullptr);
    tape().backward(o.loss);
    ps.sync_to_host();
    loss = to_host(o.loss.value())[0];
    for (size_t i = 0; i < ps.size(); ++i)
      std::memcpy(grad_out[i], ps.grads().data() + ps.offset(i), sizeof(float) * size_t(ps.at(i).shape().numel()));
    copy_written_grads(model, o, b, written_out);
    copy_bytes(memory_out, Device::CPU, o.memory.data, o.memory.device, sizeof(float) * size_t(o.memory.numel()));
  });
  if (return_memory) return py::make_tuple(loss, grads, written, after);
  return py::make_tuple(loss, grads, written);
}

// model.state_dict(): on the CPU, arrays that share the parameters' storage (writing into one
// changes the model, as torch's do); on a device, copies.
py::dict state_dict(py::object self) {
  Model& model = *self.cast<PyModel&>().model;
  ParamStore& ps = model.params();
  const bool shared = ps.device() == Device::CPU;
  if (!shared) without_gil([&] { ps.sync_to_host(); });
  py::dict d;
  for (size_t i = 0; i < ps.size(); ++i) {
    float* data = ps.values().data() + ps.offset(i);
    const std::vector<int64_t> dims = ps.at(i).shape().dims();
    d[py::str(ps.names()[i])] = shared ? py::array_t<float>(dims, data, self) : py::array_t<float>(dims, data);
  }
  return d;
}

// model.load_state_dict({name: array}): every parameter, each of its exact shape.
void load_state_dict(PyModel& pm, const py::dict& d) {
  SafeTensors st;
  for (auto [key, value] : d) {
    const std::string name = py::cast<std::string>(key);
    const py::array a = py::array::ensure(value);
    if (!a || a.dtype().kind() != 'f') raise(PyExc_TypeError, "state_dict['" + name + "'] must be a floating-point array");
    const auto f = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
    st.tensors[name] = StTensor::from_f32(std::vector<int64_t>(f.shape(), f.shape() + f.ndim()), f.data());
  }
  try {
    without_gil([&] { load_weights(*pm.model, st, "state_dict"); });
  } catch (const SafeTensorsError& e) {  // names and shapes: a ValueError here, not a file's
    throw std::invalid_argument(e.what());
  }
}

std::string repr(const PyModel& pm) {
  const ModelConfig& c = pm.model->config();
  std::string s = std::string(class_name(c.type)) + "(";
  const py::dict d = config_dict(c);
  bool first = true;
  for (auto [k, v] : d) {
    if (py::cast<std::string>(k) == "type") continue;
    s += (first ? "" : ", ") + py::cast<std::string>(k) + "=" + std::string(py::repr(v));
    first = false;
  }
  return s + ") [" + std::to_string(pm.model->params().numel()) + " parameters, " + device_name(pm.model->device()) +
         (pm.training ? ", train" : ", eval") + "]";
}

std::unique_ptr<PyModel> load(const std::string& path) {
  require_file(path);
  return wrap(without_gil([&] { return load_model(path); }));
}

// ---- training ----------------------------------------------------------------------------------

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
                         const Model& model) {
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
                  "fault"_a = s.fault);
}

// ---- research ----------------------------------------------------------------------------------

template <class T>
py::array_t<double> to_array(const std::vector<std::vector<T>>& rows) {
  const int64_t n = int64_t(rows.size()), m = rows.empty() ? 0 : int64_t(rows[0].size());
  py::array_t<double> a({n, m});
  for (int64_t i = 0; i < n; ++i) std::copy(rows[size_t(i)].begin(), rows[size_t(i)].end(), a.mutable_data(i, 0));
  return a;
}

void require_feedback(const Model& model, const char* what) {
  if (is_baseline(model))
    throw std::invalid_argument(std::string(what) + " applies to the feedback model (the transformer_xl model has no "
                                                    "detachment policies and no memory vectors); use grad_by_lag");
}

void add_research(py::module_& m) {
  py::module_ r = m.def_submodule("research", "Gradient flow through the memory: the numbers of `fbt grads`.");
  // `from fbt.research import ...` finds it too.
  py::module_::import("sys").attr("modules")["fbt.research"] = r;

  r.def(
      "grad_by_lag",
      [](PyModel& pm, py::handle x, py::handle y, py::handle memory, py::handle context, const std::string& detach) {
        Model& model = *pm.model;
        const CallBatch b = call_batch(model, x, y, memory, context);
        if (b.targets.empty()) throw std::invalid_argument("y: the targets are needed (the last position's loss)");
        if (!is_baseline(model)) {
          const DetachPolicy policy = detach_policy(model, detach);
          return py::object(to_array(without_gil([&] { return grad_norm_by_lag(model, b, policy); })));
        }
        if (detach != "none") throw std::invalid_argument("detach: the transformer_xl model has no detachment policies");
        const auto per_layer = without_gil([&] { return grad_norm_by_lag_per_layer(model, b); });
        const int64_t L = int64_t(per_layer.size()), K = int64_t(per_layer[0].size()), B = b.B;
        py::array_t<double> a({L, K, B});
        for (int64_t l = 0; l < L; ++l)
          for (int64_t k = 0; k < K; ++k) std::copy(per_layer[size_t(l)][size_t(k)].begin(), per_layer[size_t(l)][size_t(k)].end(), a.mutable_data(l, k, 0));
        return py::object(a);
      },
      "model"_a, "x"_a, "y"_a, py::kw_only(), "memory"_a = py::none(), "context"_a = py::none(), "detach"_a = "none",
      "||d loss_last / d m_u|| of the call's last position's loss with respect to every memory vector the call "
      "wrote, by lag k = T-1-u: an array (T-1, B), row k-1 for lag k. For a TransformerXL, with respect to each "
      "layer's input: (depth, T-1, B).");

  r.def(
      "truncation_bias",
      [](PyModel& pm, py::handle x, py::handle y, py::handle memory, py::handle context,
         const std::vector<std::string>& policies) {
        Model& model = *pm.model;
        require_feedback(model, "truncation_bias");
        const CallBatch b = call_batch(model, x, y, memory, context);
        if (b.targets.empty()) throw std::invalid_argument("y: the targets are needed");
        std::vector<DetachPolicy> parsed;
        for (const std::string& p : policies) parsed.push_back(detach_policy(model, p));
        const auto rows = without_gil([&] {
          const std::vector<double> g_none = parameter_gradient(model, b, DetachPolicy{});
          std::vector<std::vector<BiasRow>> out;
          for (const DetachPolicy& p : parsed) out.push_back(truncation_bias(model, parameter_gradient(model, b, p), g_none));
          return out;
        });
        py::dict d;
        for (size_t i = 0; i < parsed.size(); ++i) {
          py::dict groups;
          for (const BiasRow& row : rows[i]) groups[py::str(row.group)] = py::dict("rel_error"_a = row.rel_error, "cosine"_a = row.cosine);
          d[py::str(parsed[i].str())] = groups;
        }
        return d;
      },
      "model"_a, "x"_a, "y"_a, py::kw_only(), "memory"_a = py::none(), "context"_a = py::none(),
      "policies"_a = std::vector<std::string>{"horizon:8", "horizon:32", "every:64", "all"},
      "How far each detachment policy's parameter gradient is from policy none's: {policy: {group: "
      "{'rel_error': ||g - g_none|| / ||g_none||, 'cosine': cos(g, g_none)}}}, groups 'all' and each parameter "
      "group.");

  r.def(
      "jacobian_norms",
      [](PyModel& pm, py::handle x, py::handle memory, py::handle context, const std::string& detach, int64_t probes,
         uint64_t seed, bool exact) {
        Model& model = *pm.model;
        require_feedback(model, "jacobian_norms");
        if (probes < 1) throw std::invalid_argument("probes must be >= 1");
        const CallBatch b = call_batch(model, x, py::none(), memory, context);
        const DetachPolicy policy = detach_policy(model, detach);
        auto sq = without_gil([&] { return jacobian_sq_norms(model, b, policy, probes, seed, exact); });
        for (auto& row : sq)
          for (double& v : row) v = std::sqrt(v);
        return to_array(sq);
      },
      "model"_a, "x"_a, py::kw_only(), "memory"_a = py::none(), "context"_a = py::none(), "detach"_a = "none",
      "probes"_a = 16, "seed"_a = 1, "exact"_a = false,
      "||d m_{T-1} / d m_{T-1-k}||_F per batch row: an array (T-1, B), row k-1 for lag k; estimated with `probes` "
      "random vectors, or exact with the dim unit vectors.");

  r.def(
      "layer_mix",
      [](PyModel& pm) {
        require_feedback(*pm.model, "layer_mix");
        const std::vector<double> w = layer_mix(*pm.model);
        return py::array_t<double>(py::ssize_t(w.size()), w.data());
      },
      "model"_a, "softmax(layer_weight): how much each layer (the embedding first) contributes to the memory.");
}

}  // namespace

void define_module(py::module_& m) {
  m.doc() = "fbt: the Feedback Transformer (Fan et al. 2021) at C++ speed, with numpy arrays. docs/PYTHON.md";
  m.attr("__version__") = FBT_VERSION;
  translate_errors();

  py::class_<PyModel>(m, "Model", "A model of either family (fbt.load returns the right one).")
      .def("__call__", &call, "x"_a, py::kw_only(), "memory"_a = py::none(), "context"_a = py::none(),
           "return_memory"_a = false,
           "Logits (B, T, num_tokens) for token ids x (B, T); with return_memory, (logits, memory) where memory "
           "is the state to pass as memory= to the next call ((B, m, dim); a TransformerXL's (depth, B, m, dim)).")
      .def("loss_and_grads", &loss_and_grads, "x"_a, "y"_a, py::kw_only(), "memory"_a = py::none(),
           "context"_a = py::none(), "detach"_a = "none", "return_memory"_a = false,
           "(loss, {name: gradient}, memory_grads): the mean cross-entropy against targets y (-1: no target), every "
           "parameter's gradient, and the gradient with respect to each memory vector the call wrote, (B, T, dim) "
           "(a TransformerXL: each layer's input, (depth, B, T, dim)); with return_memory, the memory after the call "
           "as a fourth item.")
      .def(
          "train",
          [](py::object self, bool mode) {
            self.cast<PyModel&>().training = mode;
            return self;
          },
          "mode"_a = true, "Dropout on (train) or off (eval); returns the model.")
      .def(
          "eval",
          [](py::object self) {
            self.cast<PyModel&>().training = false;
            return self;
          },
          "Dropout off; returns the model.")
      .def_property_readonly("training", [](const PyModel& pm) { return pm.training; })
      .def(
          "to",
          [](py::object self, const std::string& device) {
            PyModel& pm = self.cast<PyModel&>();
            const Device d = parse_device(device);
            without_gil([&] { pm.model->to(d); });
            return self;
          },
          "device"_a, "Moves the parameters to 'cpu' or 'cuda'; returns the model.")
      .def_property_readonly("device", [](const PyModel& pm) { return std::string(device_name(pm.model->device())); })
      .def_property_readonly("config", [](const PyModel& pm) { return config_dict(pm.model->config()); },
                             "The model config as a dict of MODEL.md names.")
      .def_property_readonly("num_parameters", [](const PyModel& pm) { return pm.model->params().numel(); })
      .def(
          "memory_shape",
          [](const PyModel& pm, int64_t batch, int64_t rows) { return py::tuple(py::cast(pm.model->memory_shape(batch, rows).dims())); },
          "batch"_a, "rows"_a, "The shape of a memory state of `rows` rows per stream.")
      .def("state_dict", &state_dict, "Every parameter by MODEL.md name, as float32 arrays.")
      .def("load_state_dict", &load_state_dict, "state_dict"_a, "Sets every parameter; names and shapes must match.")
      .def(
          "save",
          [](PyModel& pm, const std::string& path) { without_gil([&] { save_model(*pm.model, path); }); }, "path"_a,
          "Writes the weights and the model config to a safetensors file (atomically); fbt.load and the fbt "
          "commands read it.")
      .def(
          "generate",
          [](PyModel& pm, py::handle prompt, int64_t tokens, float temperature, int64_t top_k, uint64_t seed) {
            int64_t B = -1, T = 0;
            py::object p = py::array::ensure(prompt);
            if (p && py::array(p).ndim() == 1) p = p.attr("reshape")(1, -1);  // one sequence
            const std::vector<int32_t> ids = token_ids(p ? p : py::object(py::reinterpret_borrow<py::object>(prompt)),
                                                       "prompt", pm.model->config().num_tokens, false, &B, &T);
            if (B != 1) throw std::invalid_argument("prompt must be one sequence of token ids");
            if (tokens < 0 || top_k < 0 || temperature < 0)
              throw std::invalid_argument("tokens, top_k and temperature must be >= 0");
            const std::vector<int32_t> out =
                without_gil([&] { return generate(*pm.model, ids, {tokens, temperature, top_k, seed}); });
            return py::array_t<int32_t>(py::ssize_t(out.size()), out.data());
          },
          "prompt"_a, py::kw_only(), "tokens"_a = 200, "temperature"_a = 0.8f, "top_k"_a = 200, "seed"_a = 1,
          "Samples `tokens` ids after the prompt (temperature 0: greedy; top_k 0: no cut), the memory carried.")
      .def("__repr__", &repr);

  // The docstrings' signatures come from the config's field table (pybind11 copies them).
  const std::string feedback_doc = signature("feedback") +
                                   ": MODEL.md's model and defaults; seed draws the initial weights, init ('gpt2' or "
                                   "'torch') says how.";
  const std::string xl_doc = signature("transformer_xl") +
                             ": MODEL.md's baseline (per-layer memory of past layer inputs); seed and init as "
                             "FeedbackTransformer's.";
  py::class_<PyFeedbackTransformer, PyModel>(m, "FeedbackTransformer", feedback_doc.c_str())
      .def(keyword_constructor<PyFeedbackTransformer>("feedback"));
  py::class_<PyTransformerXL, PyModel>(m, "TransformerXL", xl_doc.c_str())
      .def(keyword_constructor<PyTransformerXL>("transformer_xl"));

  m.def("load", &load, "path"_a,
        "A model from a weights file (safetensors, with its config), a run's out_dir or a checkpoint directory.");
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

  const LoopConfig d;
  py::class_<PyTrainLoop>(m, "TrainLoop",
      "One training step at a time on your own arrays: forward with dropout, backward under the detachment "
      "policy, clipping, the schedule, AdamW, and each row's memory carried into the next step; grad_accum "
      "splits a step's rows into that many micro-batches, their gradients summed in order; recompute keeps "
      "only each group of windows' outputs and recomputes the rest in the backward (the same numbers, less memory).")
      .def(py::init([](PyModel& pm, double lr, int64_t warmup, int64_t total_steps, const std::string& schedule,
                       double min_lr, double clip, double weight_decay, std::pair<double, double> betas, double eps,
                       const std::string& detach, uint64_t seed, int64_t grad_accum, bool recompute) {
             const LoopConfig c = loop_settings(lr, warmup, total_steps, schedule, min_lr, clip, weight_decay, betas,
                                                eps, detach, seed, grad_accum, recompute, *pm.model);
             return std::make_unique<PyTrainLoop>(pm, c);
           }),
           py::keep_alive<1, 2>(), "model"_a, py::kw_only(), "lr"_a = d.lr, "warmup"_a = d.warmup,
           "total_steps"_a = d.total_steps, "schedule"_a = "constant", "min_lr"_a = d.min_lr, "clip"_a = d.clip,
           "weight_decay"_a = d.adam.weight_decay, "betas"_a = std::make_pair(d.adam.beta1, d.adam.beta2),
           "eps"_a = d.adam.eps, "detach"_a = "none", "seed"_a = d.seed, "grad_accum"_a = d.grad_accum,
           "recompute"_a = d.recompute)
      .def(
          "step",
          [](PyTrainLoop& t, py::handle x, py::handle y) {
            const ModelConfig& c = t.pm->model->config();
            int64_t B = -1, T = 0;
            const std::vector<int32_t> xs = token_ids(x, "x", c.num_tokens, false, &B, &T);
            const std::vector<int32_t> ys = token_ids(y, "y", c.num_tokens, true, &B, &T);
            return step_result(without_gil([&] { return t.loop.step(xs.data(), ys.data(), B, T); }));
          },
          "x"_a, "y"_a,
          "One optimizer step on inputs x and targets y (B, T) (-1: no target); returns {'loss', 'grad_norm', "
          "'lr', 'skipped', 'fault'}. Row b continues from the memory row b ended with in the previous step.")
      .def("reset_memory", [](PyTrainLoop& t) { t.loop.reset_memory(); }, "Every row starts without memory next step.")
      .def_property_readonly("steps_done", [](const PyTrainLoop& t) { return t.loop.steps_done(); })
      .def_property_readonly(
          "memory",
          [](const PyTrainLoop& t) -> py::object {
            if (t.loop.memory_rows() == 0) return py::none();
            const std::vector<float> v = t.loop.memory();
            const int64_t D = t.pm->model->config().dim, rows = t.loop.memory_rows();
            const int64_t per_stream = is_baseline(*t.pm->model) ? t.pm->model->config().depth * rows * D : rows * D;
            const Shape s = t.pm->model->memory_shape(int64_t(v.size()) / per_stream, rows);
            return py::array_t<float>(s.dims(), v.data());
          },
          "The memory carried into the next step, or None.");

  add_research(m);
}

}  // namespace fbt::python

PYBIND11_MODULE(fbt, m) { fbt::python::define_module(m); }
