// Python bindings of the CPU group advantages (used by vipfast.advantages on CPU tensors).
// Arrays are read in place when C-contiguous, aligned and of a dtype the core takes; the
// output is a float32 array the caller allocates (a torch tensor's numpy view).
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "vipfast/advantages.hpp"

namespace vipfast::bindings {
namespace {

using npy = py::detail::npy_api;

// array as a C-contiguous, aligned T[]: a view when it already is one, else a converted copy.
template <class T>
py::array_t<T, py::array::c_style> contiguous(const py::array& array) {
  auto& api = npy::get();
  const int flags = npy::NPY_ARRAY_ENSUREARRAY_ | npy::NPY_ARRAY_C_CONTIGUOUS_ | npy::NPY_ARRAY_ALIGNED_ |
                    npy::NPY_ARRAY_FORCECAST_;
  PyObject* result = api.PyArray_FromAny_(array.ptr(), py::dtype::of<T>().release().ptr(), 0, 0, flags, nullptr);
  if (result == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::array_t<T, py::array::c_style>>(result);
}

char kind_of(const py::array& array) { return array.dtype().kind(); }

py::array vector(const py::array& array, const char* name) {
  require_ndim(array, 1, name);
  return array;
}

// Integers of any width as int64; uint64 values above 2^63 - 1 are refused, not wrapped.
py::array_t<int64_t, py::array::c_style> int64_vector(const py::array& array, const char* name) {
  vector(array, name);
  const char kind = kind_of(array);
  if (kind != 'i' && kind != 'u')
    throw py::type_error(std::string(name) + " must hold integers, got dtype " + std::string(py::str(array.dtype())));
  auto values = contiguous<int64_t>(array);
  if (kind == 'u' && array.itemsize() == 8) {
    auto raw = contiguous<uint64_t>(array);
    for (py::ssize_t i = 0; i < raw.shape(0); ++i)
      if (raw.data()[i] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw py::value_error(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(raw.data()[i]) +
                              " does not fit in int64");
  }
  return values;
}

AdvantageOptions options_of(const std::string& estimator, double eps, bool require_finite, bool allow_empty) {
  return AdvantageOptions{parse_estimator(estimator), eps, require_finite, allow_empty};
}

float* output(py::array out, py::ssize_t length) {
  vector(out, "out");
  if (!out.dtype().is(py::dtype::of<float>()) || !(out.flags() & npy::NPY_ARRAY_C_CONTIGUOUS_) ||
      !(out.flags() & npy::NPY_ARRAY_ALIGNED_))
    throw py::type_error("out must be a C-contiguous, aligned float32 array, got dtype " +
                         std::string(py::str(out.dtype())));
  require_length(out.shape(0), length, "out");
  return static_cast<float*>(out.mutable_data());
}

// Calls body(const T* rewards) with rewards as float (float32 input) or double (anything else real).
template <class Body>
void with_rewards(const py::array& rewards, Body&& body) {
  vector(rewards, "rewards");
  const char kind = kind_of(rewards);
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
    throw py::type_error("rewards must hold real numbers, got dtype " + std::string(py::str(rewards.dtype())));
  if (rewards.dtype().is(py::dtype::of<float>())) {
    const auto values = contiguous<float>(rewards);
    body(values.data());
  } else {
    const auto values = contiguous<double>(rewards);
    body(values.data());
  }
}

void segment_advantages_py(const py::array& rewards, const py::array& bounds, bool bounds_are_offsets,
                           const py::array& out, const std::string& estimator, double eps, bool require_finite,
                           bool allow_empty_groups) {
  const AdvantageOptions options = options_of(estimator, eps, require_finite, allow_empty_groups);
  vector(rewards, "rewards");
  const auto values = int64_vector(bounds, bounds_are_offsets ? "offsets" : "group_sizes");
  const GroupBounds groups{values.data(), values.shape(0), bounds_are_offsets};
  float* target = output(out, rewards.shape(0));
  with_rewards(rewards, [&](const auto* r) {
    py::gil_scoped_release release;
    segment_advantages(r, rewards.shape(0), groups, options, target);
  });
}

// Calls body(const Id* group_of) for an int32 or int64 array of group ids.
template <class Body>
void with_group_ids(const py::array& group_of, Body&& body) {
  vector(group_of, "group_of");
  if (group_of.dtype().is(py::dtype::of<int32_t>())) {
    const auto ids = contiguous<int32_t>(group_of);
    body(ids.data());
  } else {
    const auto ids = int64_vector(group_of, "group_of");
    body(ids.data());
  }
}

void indexed_advantages_py(const py::array& rewards, const py::array& group_of, int64_t num_groups,
                           const py::array& out, const std::string& estimator, double eps, bool require_finite) {
  const AdvantageOptions options = options_of(estimator, eps, require_finite, true);
  vector(rewards, "rewards");
  require_length(group_of.ndim() == 1 ? group_of.shape(0) : -1, rewards.shape(0), "group_of");
  float* target = output(out, rewards.shape(0));
  with_rewards(rewards, [&](const auto* r) {
    with_group_ids(group_of, [&](const auto* ids) {
      py::gil_scoped_release release;
      indexed_advantages(r, rewards.shape(0), ids, num_groups, options, target);
    });
  });
}

void keyed_advantages_py(const py::array& rewards, const py::array& keys, const py::array& out,
                         const std::string& estimator, double eps, bool require_finite) {
  const AdvantageOptions options = options_of(estimator, eps, require_finite, true);
  vector(rewards, "rewards");
  const auto ids = int64_vector(keys, "keys");
  require_length(ids.shape(0), rewards.shape(0), "keys");
  float* target = output(out, rewards.shape(0));
  with_rewards(rewards, [&](const auto* r) {
    py::gil_scoped_release release;
    keyed_advantages(r, rewards.shape(0), ids.data(), options, target);
  });
}

py::array_t<int64_t> group_offsets_py(const py::array& bounds, bool bounds_are_offsets, int64_t num_rollouts,
                                      bool allow_empty_groups) {
  const auto values = int64_vector(bounds, bounds_are_offsets ? "offsets" : "group_sizes");
  const GroupBounds groups{values.data(), values.shape(0), bounds_are_offsets};
  py::array_t<int64_t> offsets(bounds_are_offsets ? std::max<py::ssize_t>(values.shape(0), 1) : values.shape(0) + 1);
  group_offsets(groups, num_rollouts, allow_empty_groups, offsets.mutable_data());
  return offsets;
}

// Python objects compared as a dict compares its keys: identity first, then ==.
struct SameObject {
  bool operator()(PyObject* a, PyObject* b) const {
    if (a == b) return true;
    const int equal = PyObject_RichCompareBool(a, b, Py_EQ);
    if (equal < 0) throw py::error_already_set();
    return equal == 1;
  }
};

// An id that is not equal to itself (a float NaN) names no group.
void require_self_equal(PyObject* key, py::ssize_t i) {
  if (PyUnicode_CheckExact(key) || PyLong_CheckExact(key)) return;
  const std::string named = "index[" + std::to_string(i) + "] = ";
  const auto refuse_uncomparable = [&] {
    const py::error_already_set error;  // fetches and clears the raised error, so repr can run
    throw py::type_error(named + std::string(py::repr(key)) + " cannot tell whether it equals itself (" +
                         std::string(py::str(error.value())) +
                         "); ids must be strings, integers or other values with a plain ==");
  };
  PyObject* same = PyObject_RichCompare(key, key, Py_EQ);
  if (same == nullptr) refuse_uncomparable();
  const int truth = PyObject_IsTrue(same);
  Py_DECREF(same);
  if (truth < 0) refuse_uncomparable();
  if (truth == 0)
    throw py::value_error(named + std::string(py::repr(key)) + " is not equal to itself (NaN), so it names no group");
}

// Holds the GIL throughout; keeps every group's first id alive, as __eq__ or __hash__ may run
// Python code that changes the array.
template <class Id>
int64_t objects_to_groups(const py::array& index, Id* group_of) {
  GroupTable<PyObject*, SameObject> table;
  std::vector<py::object> firsts;
  const char* base = static_cast<const char*>(index.data());
  const py::ssize_t stride = index.strides(0);
  for (py::ssize_t i = 0; i < index.shape(0); ++i) {
    PyObject* raw = *reinterpret_cast<PyObject* const*>(base + i * stride);
    // numpy may leave unset object slots NULL
    const auto owner = py::reinterpret_borrow<py::object>(raw != nullptr ? raw : Py_None);
    PyObject* key = owner.ptr();
    const Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1 && PyErr_Occurred()) {
      PyErr_Clear();
      throw py::type_error("index[" + std::to_string(i) + "] = " + std::string(py::repr(key)) +
                           " is not hashable; ids must be strings, integers or other hashable values");
    }
    const int64_t seen = table.size();
    const int64_t id = table.id(key, static_cast<uint64_t>(hash));
    if (id == seen) {
      require_self_equal(key, i);
      firsts.push_back(owner);
    }
    group_of[i] = static_cast<Id>(id);
  }
  return table.size();
}

template <class Id>
py::tuple dense_groups_as(const py::array& index) {
  py::array_t<Id> group_of(index.shape(0));
  Id* ids = group_of.mutable_data();
  int64_t count = 0;
  if (kind_of(index) == 'O') {
    count = objects_to_groups(index, ids);
  } else {
    const auto keys = int64_vector(index, "index");
    py::gil_scoped_release release;
    count = dense_groups(keys.data(), keys.shape(0), ids);
  }
  return py::make_tuple(group_of, count);
}

py::tuple dense_groups_py(const py::array& index) {
  vector(index, "index");
  if (kind_of(index) != 'O' && kind_of(index) != 'i' && kind_of(index) != 'u')
    throw py::type_error("index must hold integers or Python objects, got dtype " +
                         std::string(py::str(index.dtype())));
  if (index.shape(0) <= std::numeric_limits<int32_t>::max()) return dense_groups_as<int32_t>(index);
  return dense_groups_as<int64_t>(index);
}

py::tuple group_order_py(const py::array& group_of, int64_t num_groups) {
  if (num_groups < 0) throw py::value_error("num_groups must be >= 0, got " + std::to_string(num_groups));
  vector(group_of, "group_of");
  py::array_t<int64_t> order(group_of.shape(0));
  py::array_t<int64_t> sizes(num_groups);
  int64_t* order_out = order.mutable_data();
  int64_t* sizes_out = sizes.mutable_data();
  with_group_ids(group_of, [&](const auto* ids) {
    py::gil_scoped_release release;
    group_order(ids, group_of.shape(0), num_groups, order_out, sizes_out);
  });
  return py::make_tuple(order, sizes);
}

}  // namespace

void bind_advantages(py::module_& m) {
  m.def("segment_advantages", &segment_advantages_py, py::arg("rewards"), py::arg("bounds"),
        py::arg("bounds_are_offsets"), py::arg("out"), py::arg("estimator"), py::arg("eps"),
        py::arg("require_finite"), py::arg("allow_empty_groups"),
        "Advantages of contiguous groups (sizes or CSR offsets) into out (float32[N]).");
  m.def("indexed_advantages", &indexed_advantages_py, py::arg("rewards"), py::arg("group_of"),
        py::arg("num_groups"), py::arg("out"), py::arg("estimator"), py::arg("eps"), py::arg("require_finite"),
        "Advantages of groups given by a group id per rollout (int32 or int64) into out (float32[N]).");
  m.def("keyed_advantages", &keyed_advantages_py, py::arg("rewards"), py::arg("keys"), py::arg("out"),
        py::arg("estimator"), py::arg("eps"), py::arg("require_finite"),
        "Advantages of groups given by an integer key per rollout (equal keys, one group) into out (float32[N]).");
  m.def("group_offsets", &group_offsets_py, py::arg("bounds"), py::arg("bounds_are_offsets"),
        py::arg("num_rollouts"), py::arg("allow_empty_groups"),
        "Checked CSR offsets (int64[G+1]) from group sizes or offsets.");
  m.def("dense_groups", &dense_groups_py, py::arg("index"),
        "(group_of, G): each id's group, numbered by first appearance (int32 unless N > 2^31 - 1).");
  m.def("group_order", &group_order_py, py::arg("group_of"), py::arg("num_groups"),
        "(order, sizes): stable counting sort of rollouts by group.");
}

}  // namespace vipfast::bindings
