// The Python module's boundary rules (python/boundary.hpp).
#include "python/boundary.hpp"

#include <filesystem>

#include "backend/device.hpp"
#include "util/config_section.hpp"
#include "util/files.hpp"

namespace fbt::python {

std::mutex& library_lock() {
  static std::mutex one_at_a_time;
  return one_at_a_time;
}

// The library's errors as the Python exceptions a user expects: bad configs and values as
// ValueError (std::invalid_argument is pybind11's ValueError already), files as OSError, a failed
// allocation as MemoryError with what to change.
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
    } catch (const std::bad_alloc& e) {  // what ran out and what to change, as the command line says
      PyErr_SetString(PyExc_MemoryError, out_of_memory_message(e).c_str());
    }
  });
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

}  // namespace fbt::python
