// JS class `Tensor`: owns a dwc::Tensor (float32 or int32). Data crosses the boundary by copy.
#pragma once
#include <napi.h>

#include "../core/tensor.h"

namespace dwc {

class TensorObject : public Napi::ObjectWrap<TensorObject> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::FunctionReference* constructor;
  static Napi::Object Wrap(Napi::Env env, const Tensor& t);  // a new JS Tensor sharing t's storage
  explicit TensorObject(const Napi::CallbackInfo& info);
  Tensor tensor;

 private:
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value DTypeName(const Napi::CallbackInfo& info);
  Napi::Value Numel(const Napi::CallbackInfo& info);
  Napi::Value Released(const Napi::CallbackInfo& info);
  Napi::Value ToArray(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
};

// Throws a JS error carrying `code` (e.g. DWC_BAD_ARGUMENT) and the message.
void throw_js(Napi::Env env, const char* code, const std::string& msg);
Napi::Error make_js_error(Napi::Env env, const char* code, const std::string& msg);

}  // namespace dwc
