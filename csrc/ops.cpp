// Schema of the salrt operators, their Autograd kernels, and the Python module entry point.
// Device implementations live in cpu/ and cuda/; the fake (meta) kernels are registered in salrt/ops/fake.py.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <Python.h>
#include <torch/library.h>

namespace salrt {
namespace {

// The saliency map is a final output: the ops are not differentiable. Registering an Autograd kernel
// that re-dispatches below autograd makes that explicit -- outputs never require grad, so a backward
// through them raises "does not require grad" instead of the default fallback's silent missing
// gradient -- and it keeps torch.compile/export able to trace the ops when inputs require grad.
template <const char* Name>
at::Tensor below_autograd(const at::Tensor& grad, c10::string_view mode, double eps) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow(Name, "")
                             .typed<at::Tensor(const at::Tensor&, c10::string_view, double)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(grad, mode, eps);
}

constexpr char kFloatOp[] = "salrt::abs_channel_max_normalize";
constexpr char kU8Op[] = "salrt::abs_channel_max_normalize_u8";

}  // namespace

TORCH_LIBRARY(salrt, m) {
  m.def("abs_channel_max_normalize(Tensor grad, str mode=\"minmax\", float eps=1e-12) -> Tensor");
  m.def("abs_channel_max_normalize_u8(Tensor grad, str mode=\"minmax\", float eps=1e-12) -> Tensor");
}

TORCH_LIBRARY_IMPL(salrt, Autograd, m) {
  m.impl("abs_channel_max_normalize", &below_autograd<kFloatOp>);
  m.impl("abs_channel_max_normalize_u8", &below_autograd<kU8Op>);
}

}  // namespace salrt

// `import salrt._C` loads this library, which runs the registrations above; the module itself is empty.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
