// The Python module `fbt`: the seed's usage (feedback-transformer-pytorch) over the C++ library,
// with numpy arrays in place of torch tensors. docs/PYTHON.md documents it, tests/python/ tests it.
// One file per subject: boundary.cpp (the rules every call follows), models.cpp, training.cpp,
// research.cpp.
#include "python/models.hpp"

namespace fbt::python {

void define_training(py::module_& m);  // training.cpp
void define_research(py::module_& m);  // research.cpp

}  // namespace fbt::python

PYBIND11_MODULE(fbt, m) {
  m.doc() = "fbt: the Feedback Transformer (Fan et al. 2021) at C++ speed, with numpy arrays. docs/PYTHON.md";
  m.attr("__version__") = FBT_VERSION;
  fbt::python::translate_errors();
  fbt::python::define_models(m);
  fbt::python::define_training(m);
  fbt::python::define_research(m);
}
