#include "tensor_object.h"

#include <cstring>

namespace dwc {

Napi::FunctionReference* TensorObject::constructor = nullptr;

Napi::Error make_js_error(Napi::Env env, const char* code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

void throw_js(Napi::Env env, const char* code, const std::string& msg) { make_js_error(env, code, msg).ThrowAsJavaScriptException(); }

Napi::Function TensorObject::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "Tensor",
                                 {InstanceAccessor("shape", &TensorObject::Shape, nullptr),
                                  InstanceAccessor("dtype", &TensorObject::DTypeName, nullptr),
                                  InstanceAccessor("numel", &TensorObject::Numel, nullptr),
                                  InstanceAccessor("released", &TensorObject::Released, nullptr),
                                  InstanceMethod("toArray", &TensorObject::ToArray), InstanceMethod("release", &TensorObject::Release)});
  constructor = new Napi::FunctionReference(Napi::Persistent(f));
  return f;
}

// new Tensor(dtype: 'float32' | 'int32', shape: number[], data?: Float32Array | Int32Array)
// new Tensor() with no arguments creates an empty shell (used by Wrap).
TensorObject::TensorObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorObject>(info) {
  Napi::Env env = info.Env();
  if (info.Length() == 0) return;
  if (!info[0].IsString()) throw make_js_error(env, "DWC_BAD_ARGUMENT", "Tensor: argument 'dtype' must be 'float32' or 'int32'");
  std::string dt = info[0].As<Napi::String>();
  DType dtype;
  if (dt == "float32") dtype = DType::F32;
  else if (dt == "int32") dtype = DType::I32;
  else throw make_js_error(env, "DWC_BAD_ARGUMENT", "Tensor: argument 'dtype' must be 'float32' or 'int32', got '" + dt + "'");
  if (info.Length() < 2 || !info[1].IsArray()) throw make_js_error(env, "DWC_BAD_ARGUMENT", "Tensor: argument 'shape' must be an array of integers");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value v = arr.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0) || d != static_cast<double>(static_cast<int64_t>(d)) || d > 1e12)
      throw make_js_error(env, "DWC_BAD_ARGUMENT", "Tensor: argument 'shape' must hold non-negative integers, got entry " + std::to_string(i) + " invalid");
    shape.push_back(static_cast<int64_t>(d));
  }
  try {
    tensor = Tensor::empty(dtype, shape);
  } catch (const Error& e) {
    throw make_js_error(env, error_code_name(e.code()), e.what());
  }
  if (info.Length() >= 3 && !info[2].IsUndefined()) {
    if (!info[2].IsTypedArray()) throw make_js_error(env, "DWC_BAD_ARGUMENT", "Tensor: argument 'data' must be a Float32Array or Int32Array");
    Napi::TypedArray ta = info[2].As<Napi::TypedArray>();
    napi_typedarray_type want = dtype == DType::F32 ? napi_float32_array : napi_int32_array;
    if (ta.TypedArrayType() != want)
      throw make_js_error(env, "DWC_BAD_ARGUMENT", std::string("Tensor: argument 'data' must be a ") + (dtype == DType::F32 ? "Float32Array" : "Int32Array") +
                                                   " for dtype " + dt);
    if (static_cast<int64_t>(ta.ElementLength()) != tensor.numel())
      throw make_js_error(env, "DWC_BAD_ARGUMENT", "Tensor: argument 'data' has " + std::to_string(ta.ElementLength()) + " elements but shape " +
                                                   shape_str(shape) + " needs " + std::to_string(tensor.numel()));
    const char* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    std::memcpy(tensor.storage->data, src, ta.ElementLength() * 4);
  }
}

Napi::Object TensorObject::Wrap(Napi::Env env, const Tensor& t) {
  Napi::Object o = constructor->New({});
  TensorObject::Unwrap(o)->tensor = t;
  (void)env;
  return o;
}

Napi::Value TensorObject::Shape(const Napi::CallbackInfo& info) {
  Napi::Array a = Napi::Array::New(info.Env(), tensor.shape.size());
  for (size_t i = 0; i < tensor.shape.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(tensor.shape[i])));
  return a;
}
Napi::Value TensorObject::DTypeName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dtype_name(tensor.dtype)); }
Napi::Value TensorObject::Numel(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(tensor.numel())); }
Napi::Value TensorObject::Released(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !tensor.storage || tensor.storage->released);
}

Napi::Value TensorObject::ToArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!tensor.storage || tensor.storage->released) {
    throw_js(env, "DWC_RELEASED", "Tensor.toArray: tensor has been released");
    return env.Undefined();
  }
  if (tensor.storage->busy) {
    throw_js(env, "DWC_BUSY", "Tensor.toArray: tensor is in use by a running async call");
    return env.Undefined();
  }
  size_t n = static_cast<size_t>(tensor.numel());
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, n * 4);
  std::memcpy(buf.Data(), static_cast<const char*>(tensor.storage->data) + tensor.offset * 4, n * 4);
  if (tensor.dtype == DType::F32) return Napi::Float32Array::New(env, n, buf, 0);
  return Napi::Int32Array::New(env, n, buf, 0);
}

Napi::Value TensorObject::Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (tensor.storage && tensor.storage->busy) {
    throw_js(env, "DWC_BUSY", "Tensor.release: tensor is in use by a running async call");
    return env.Undefined();
  }
  if (tensor.storage && !tensor.storage->released) tensor.storage->release();
  return env.Undefined();
}

}  // namespace dwc
