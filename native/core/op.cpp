#include "op.h"

#include <cmath>

namespace dwc {

std::map<std::string, OpInfo>& op_registry() {
  static std::map<std::string, OpInfo> r;
  return r;
}

OpRegistrar::OpRegistrar(const char* name, const char* doc, OpFn fn) { op_registry()[name] = OpInfo{name, doc, std::move(fn)}; }

void run_op(const std::string& name, OpCtx& ctx) {
  auto it = op_registry().find(name);
  DWC_ARG_CHECK(it != op_registry().end(), "unknown op '" << name << "'");
  ctx.op_name = name;
  it->second.fn(ctx);
}

const Tensor* OpCtx::find(const std::string& name, DType dtype, int rank, bool required) const {
  auto it = inputs.find(name);
  if (it == inputs.end()) {
    DWC_ARG_CHECK(!required, op_name << ": missing input '" << name << "'");
    return nullptr;
  }
  const Tensor& t = it->second;
  DWC_CHECK(t.storage && !t.storage->released, Released, op_name << ": argument '" << name << "': tensor has been released");
  DWC_ARG_CHECK(t.dtype == dtype, op_name << ": argument '" << name << "': expected dtype " << dtype_name(dtype) << " but got "
                                          << dtype_name(t.dtype));
  DWC_ARG_CHECK(rank < 0 || t.ndim() == rank, op_name << ": argument '" << name << "': expected " << rank << "-D tensor but got shape "
                                                      << shape_str(t.shape));
  DWC_ARG_CHECK(t.contiguous(), op_name << ": argument '" << name << "': tensor must be contiguous");
  return &t;
}

const Tensor& OpCtx::in(const std::string& n, int rank) const { return *find(n, DType::F32, rank, true); }
const Tensor* OpCtx::in_opt(const std::string& n, int rank) const { return find(n, DType::F32, rank, false); }
const Tensor& OpCtx::in_i32(const std::string& n, int rank) const { return *find(n, DType::I32, rank, true); }
const Tensor* OpCtx::in_i32_opt(const std::string& n, int rank) const { return find(n, DType::I32, rank, false); }

double OpCtx::attr(const std::string& name) const {
  auto it = attrs.find(name);
  DWC_ARG_CHECK(it != attrs.end(), op_name << ": missing option '" << name << "'");
  DWC_ARG_CHECK(std::isfinite(it->second), op_name << ": option '" << name << "' must be a finite number, got " << it->second);
  return it->second;
}

double OpCtx::attr_or(const std::string& name, double def) const { return attrs.count(name) ? attr(name) : def; }

int64_t OpCtx::int_attr(const std::string& name) const {
  double v = attr(name);
  DWC_ARG_CHECK(v == std::floor(v), op_name << ": option '" << name << "' must be an integer, got " << v);
  return static_cast<int64_t>(v);
}

int64_t OpCtx::int_attr_or(const std::string& name, int64_t def) const { return attrs.count(name) ? int_attr(name) : def; }

bool OpCtx::flag(const std::string& name, bool def) const {
  auto it = attrs.find(name);
  return it == attrs.end() ? def : it->second != 0.0;
}

void OpCtx::expect_dim(const Tensor& t, const std::string& name, int axis, int64_t value, const char* what) const {
  DWC_ARG_CHECK(axis < t.ndim() && t.dim(axis) == value, op_name << ": argument '" << name << "' has shape " << shape_str(t.shape)
                                                                 << ", expected dim " << axis << " = " << value << " (" << what << ")");
}

void OpCtx::expect_shape(const Tensor& t, const std::string& name, const std::vector<int64_t>& shape) const {
  DWC_ARG_CHECK(t.shape == shape, op_name << ": argument '" << name << "' has shape " << shape_str(t.shape) << ", expected "
                                          << shape_str(shape));
}

Tensor& OpCtx::out(const std::string& name, const std::vector<int64_t>& shape, DType dtype) {
  outputs[name] = Tensor::empty(dtype, shape);
  return outputs[name];
}

Tensor& OpCtx::out_copy(const std::string& name, const Tensor& src) {
  Tensor& t = out(name, src.shape, src.dtype);
  std::copy(static_cast<const char*>(src.storage->data) + src.offset * 4,
            static_cast<const char*>(src.storage->data) + (src.offset + src.numel()) * 4, static_cast<char*>(t.storage->data));
  return t;
}

}  // namespace dwc
