// The model classes of the Python module: Model, FeedbackTransformer, TransformerXL, fbt.load.
#pragma once
#include <memory>
#include <string>

#include "python/boundary.hpp"

namespace fbt::python {

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

// A model from a weights file, a run's out_dir or a checkpoint directory.
std::unique_ptr<PyModel> load(const std::string& path);

// Model and its two classes, and fbt.load.
void define_models(py::module_& m);

}  // namespace fbt::python
