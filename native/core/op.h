// Op registry: every kernel family exposes its forward/backward kernels as named ops so that
// JS tests, benchmarks and the C++ test executable can call each one by name. An op reads
// named inputs and attributes from an OpCtx (which validates them and names the argument in
// every error) and creates its named outputs (zero-initialised). No N-API in here.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tensor.h"

namespace dwc {

class OpCtx {
 public:
  std::map<std::string, Tensor> inputs;
  std::map<std::string, double> attrs;
  std::map<std::string, Tensor> outputs;
  std::string op_name;

  // Required float32 input of the given rank (rank < 0: any).
  const Tensor& in(const std::string& name, int rank = -1) const;
  const Tensor* in_opt(const std::string& name, int rank = -1) const;
  const Tensor& in_i32(const std::string& name, int rank = -1) const;
  const Tensor* in_i32_opt(const std::string& name, int rank = -1) const;
  // Required finite numeric attribute / optional with default.
  double attr(const std::string& name) const;
  double attr_or(const std::string& name, double def) const;
  int64_t int_attr(const std::string& name) const;
  int64_t int_attr_or(const std::string& name, int64_t def) const;
  bool flag(const std::string& name, bool def = false) const;
  // Shape checks that name the argument: expect(t, "x", axis, value, "C (channels of w)").
  void expect_dim(const Tensor& t, const std::string& name, int axis, int64_t value, const char* what) const;
  void expect_shape(const Tensor& t, const std::string& name, const std::vector<int64_t>& shape) const;
  Tensor& out(const std::string& name, const std::vector<int64_t>& shape, DType dtype = DType::F32);
  // Output aliasing a copy of an input (for in-place style ops such as Adam or running stats).
  Tensor& out_copy(const std::string& name, const Tensor& src);

 private:
  const Tensor* find(const std::string& name, DType dtype, int rank, bool required) const;
};

using OpFn = std::function<void(OpCtx&)>;

struct OpInfo {
  std::string name;
  std::string doc;  // one line: inputs -> outputs
  OpFn fn;
};

std::map<std::string, OpInfo>& op_registry();
void run_op(const std::string& name, OpCtx& ctx);  // throws BadArgument for unknown op

struct OpRegistrar {
  OpRegistrar(const char* name, const char* doc, OpFn fn);
};

}  // namespace dwc

#define DWC_OP_CAT2(a, b) a##b
#define DWC_OP_CAT(a, b) DWC_OP_CAT2(a, b)
// DWC_REGISTER_OP("relu_forward", "x -> y", [](dwc::OpCtx& c) { ... });
#define DWC_REGISTER_OP(name, doc, ...) \
  static ::dwc::OpRegistrar DWC_OP_CAT(dwc_op_registrar_, __LINE__)(name, doc, __VA_ARGS__)
