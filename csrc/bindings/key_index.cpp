// Python bindings of KeyIndex (vipfast.allocators.prompt_table wraps it).
#include "arrays.hpp"
#include "vipfast/key_index.hpp"

namespace vipfast::bindings {
namespace {

using UInt64Array = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;

// Runs lookup(keys, count, rows) without the GIL into a fresh int64 array.
template <class Lookup>
py::array_t<int64_t> rows_of(const UInt64Array& keys, const Lookup& lookup) {
  require_ndim(keys, 1, "keys");
  const py::ssize_t count = keys.shape(0);
  py::array_t<int64_t> rows(count);
  const uint64_t* in = keys.data();
  int64_t* out = rows.mutable_data();
  py::gil_scoped_release release;
  lookup(in, count, out);
  return rows;
}

}  // namespace

void bind_key_index(py::module_& m) {
  py::class_<KeyIndex>(m, "KeyIndex", "uint64 key -> dense row; use vipfast.allocators.prompt_table.PromptTable.")
      .def(py::init<>())
      .def(py::init([](const UInt64Array& keys) {
             require_ndim(keys, 1, "keys");
             const uint64_t* data = keys.data();
             const py::ssize_t count = keys.shape(0);
             py::gil_scoped_release release;
             return KeyIndex(data, count);
           }),
           py::arg("keys"), "An index of distinct keys, row i for keys[i].")
      .def("find", [](const KeyIndex& index, const UInt64Array& keys) {
             return rows_of(keys, [&](const uint64_t* k, int64_t n, int64_t* r) { index.find(k, n, r); });
           },
           py::arg("keys"), "int64[Q]: each key's row, -1 when absent.")
      .def("insert", [](KeyIndex& index, const UInt64Array& keys) {
             return rows_of(keys, [&](const uint64_t* k, int64_t n, int64_t* r) { index.insert(k, n, r); });
           },
           py::arg("keys"), "int64[Q]: each key's row, absent keys appended in order of first appearance.")
      .def("keys", [](const KeyIndex& index) {
             return py::array_t<uint64_t>(index.size(), index.keys().data());
           }, "uint64[size]: the keys by row.")
      .def_property_readonly("memory_bytes", &KeyIndex::memory_bytes)
      .def("__len__", &KeyIndex::size);
}

}  // namespace vipfast::bindings
