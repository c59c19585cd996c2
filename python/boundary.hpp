// The Python module's boundary, its rules in one place each (python/*.cpp use them):
//  - arrays are checked here (dtype kind, rank, shape, id range) and name the argument;
//  - every call into the library runs without the GIL and one at a time (without_gil);
//  - C++ errors arrive as Python exceptions with the same one-line message (translate_errors).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "fbt/fbt.hpp"

namespace py = pybind11;

namespace fbt::python {

// The lock every library call holds (without_gil).
std::mutex& library_lock();

// Runs f without the GIL (other Python threads go on meanwhile), one library call at a time: a
// model's parameters and gradients are shared state.
template <class F>
auto without_gil(F&& f) {
  py::gil_scoped_release release;
  const std::lock_guard<std::mutex> lock(library_lock());
  return f();
}

// Registers the translation of the library's errors into the Python exceptions a user expects.
void translate_errors();

template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

[[noreturn]] void raise(PyObject* type, const std::string& message);
void require_file(const std::string& path);
std::string shape_text(const py::array& a);

// Token ids (any integer dtype, or a nested list) of shape (B, T); B < 0 on entry: any shape,
// else it must be (B, T). With `ignore`, kNoTarget (-1) marks a position without a target.
std::vector<int32_t> token_ids(py::handle obj, const char* name, int64_t num_tokens, bool ignore, int64_t* B,
                               int64_t* T);
// A float array of exactly `dims` (any floating dtype; float32 C-contiguous is read in place).
py::array_t<float, py::array::c_style | py::array::forcecast> floats(py::handle obj, const std::string& name,
                                                                    const std::vector<int64_t>& dims,
                                                                    const std::string& expected);
// The arguments of a call as the library takes them (models/call_batch.hpp). y: None or targets.
CallBatch call_batch(const Model& model, py::handle x, py::handle y, py::handle memory, py::handle context);
// A detachment policy from its text, its error naming the keyword.
DetachPolicy detach_policy(const Model& model, const std::string& text);
py::array_t<float> new_array(const std::vector<int64_t>& dims);

}  // namespace fbt::python
