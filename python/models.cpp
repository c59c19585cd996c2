// The model classes of the Python module (python/models.hpp).
#include "python/models.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <type_traits>

namespace fbt::python {

using namespace pybind11::literals;

namespace {

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

// model.train(mode=True) / model.eval(): dropout on or off; both return the model.
py::object set_training(py::object self, bool mode) {
  self.cast<PyModel&>().training = mode;
  return self;
}

py::object move_to(py::object self, const std::string& device) {
  PyModel& pm = self.cast<PyModel&>();
  const Device d = parse_device(device);
  without_gil([&] { pm.model->to(d); });
  return self;
}

// model.generate(prompt, tokens=..., ...): the prompt (one sequence) and what was sampled after it.
py::array_t<int32_t> generate_ids(PyModel& pm, py::handle prompt, int64_t tokens, float temperature, int64_t top_k,
                                  uint64_t seed) {
  int64_t B = -1, T = 0;
  py::object p = py::array::ensure(prompt);
  if (p && py::array(p).ndim() == 1) p = p.attr("reshape")(1, -1);  // one sequence
  const std::vector<int32_t> ids = token_ids(p ? p : py::object(py::reinterpret_borrow<py::object>(prompt)), "prompt",
                                             pm.model->config().num_tokens, false, &B, &T);
  if (B != 1) throw std::invalid_argument("prompt must be one sequence of token ids");
  if (tokens < 0 || top_k < 0 || temperature < 0) throw std::invalid_argument("tokens, top_k and temperature must be >= 0");
  const std::vector<int32_t> out = without_gil([&] { return generate(*pm.model, ids, {tokens, temperature, top_k, seed}); });
  return py::array_t<int32_t>(py::ssize_t(out.size()), out.data());
}

// The class Model: what both families do.
void define_model_class(py::module_& m) {
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
      .def("train", &set_training, "mode"_a = true, "Dropout on (train) or off (eval); returns the model.")
      .def("eval", [](py::object self) { return set_training(self, false); }, "Dropout off; returns the model.")
      .def_property_readonly("training", [](const PyModel& pm) { return pm.training; })
      .def("to", &move_to, "device"_a, "Moves the parameters to 'cpu' or 'cuda'; returns the model.")
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
          "save", [](PyModel& pm, const std::string& path) { without_gil([&] { save_model(*pm.model, path); }); },
          "path"_a,
          "Writes the weights and the model config to a safetensors file (atomically); fbt.load and the fbt "
          "commands read it.")
      .def("generate", &generate_ids, "prompt"_a, py::kw_only(), "tokens"_a = 200, "temperature"_a = 0.8f,
           "top_k"_a = 200, "seed"_a = 1,
           "Samples `tokens` ids after the prompt (temperature 0: greedy; top_k 0: no cut), the memory carried.")
      .def("__repr__", &repr);
}

}  // namespace

std::unique_ptr<PyModel> load(const std::string& path) {
  require_file(path);
  return wrap(without_gil([&] { return load_model(path); }));
}

void define_models(py::module_& m) {
  define_model_class(m);
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
}

}  // namespace fbt::python
