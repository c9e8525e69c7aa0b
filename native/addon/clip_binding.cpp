// JS class `ClipModel`: the native CLIP (native/model/clip.h). Argument checks name the bad
// argument; embedding, loss/gradient and training run in async workers; a model in use by an
// async call refuses every other call with DWC_BUSY.
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>

#include "../core/threads.h"
#include "../model/clip.h"
#include "addon.h"

namespace dwc {
namespace {

class ClipObject : public Napi::ObjectWrap<ClipObject> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "ClipModel",
                       {InstanceMethod("params", &ClipObject::Params), InstanceMethod("getTensor", &ClipObject::GetTensor),
                        InstanceMethod("setTensor", &ClipObject::SetTensor), InstanceMethod("getStep", &ClipObject::GetStep),
                        InstanceMethod("setStep", &ClipObject::SetStep), InstanceMethod("encodeImage", &ClipObject::EncodeImage),
                        InstanceMethod("encodeText", &ClipObject::EncodeText), InstanceMethod("lossAndGrad", &ClipObject::LossAndGrad),
                        InstanceMethod("trainStep", &ClipObject::TrainStep), InstanceMethod("stats", &ClipObject::Stats),
                        InstanceAccessor("busy", &ClipObject::Busy, nullptr)});
  }
  explicit ClipObject(const Napi::CallbackInfo& info);
  std::unique_ptr<ClipModel> model;
  std::atomic<bool> busy{false};

 private:
  Napi::Value Params(const Napi::CallbackInfo& info);
  Napi::Value GetTensor(const Napi::CallbackInfo& info);
  Napi::Value SetTensor(const Napi::CallbackInfo& info);
  Napi::Value GetStep(const Napi::CallbackInfo& info);
  Napi::Value SetStep(const Napi::CallbackInfo& info);
  Napi::Value EncodeImage(const Napi::CallbackInfo& info);
  Napi::Value EncodeText(const Napi::CallbackInfo& info);
  Napi::Value LossAndGrad(const Napi::CallbackInfo& info);
  Napi::Value TrainStep(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Busy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy.load()); }
  void check_idle(const char* method) const {
    DWC_CHECK(!busy.load(), Busy, "ClipModel." << method << ": the model is in use by a running async call (await it first)");
  }
  Napi::Value queue(Napi::Env env, const char* method, AsyncWork work, AsyncDone done, std::vector<Napi::Reference<Napi::Value>> refs,
                    Napi::Object self);
};

int arch_int(const Napi::Object& o, const char* key, int min) {
  Napi::Value v = o.Get(key);
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  DWC_ARG_CHECK(d >= min && d <= (1 << 24) && d == std::floor(d), "ClipModel: architecture field '" << key << "' must be an integer >= " << min);
  return static_cast<int>(d);
}

}  // namespace

// The architecture object of `new ClipModel(arch)` (also the DWC model's dimension 'clip', addon.h).
ClipArch clip_arch_from_js(const Napi::Object& o) {
  ClipArch a;
  Napi::Value img = o.Get("image");
  if (!img.IsUndefined()) {
    DWC_ARG_CHECK(img.IsString(), "ClipModel: architecture field 'image' must be a string");
    a.image = img.As<Napi::String>().Utf8Value();
  }
  a.embed_dim = arch_int(o, "embedDim", 1);
  if (a.image == "resnet") {  // ModifiedResNet: rnWidth, rnLayers [4], rnHeads
    a.rn_width = arch_int(o, "rnWidth", 2);
    a.rn_heads = arch_int(o, "rnHeads", 1);
    Napi::Value ly = o.Get("rnLayers");
    DWC_ARG_CHECK(ly.IsArray() && ly.As<Napi::Array>().Length() == 4, "ClipModel: architecture field 'rnLayers' must be an array of 4 block counts");
    Napi::Object lo = ly.As<Napi::Object>();
    for (uint32_t i = 0; i < 4; ++i) {
      Napi::Value v = lo.Get(i);
      const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      DWC_ARG_CHECK(d >= 1 && d <= 1024 && d == std::floor(d), "ClipModel: architecture field 'rnLayers' must hold integers >= 1");
      a.rn_layers[i] = static_cast<int>(d);
    }
  } else {
    a.vision_width = arch_int(o, "visionWidth", 1);
    a.vision_layers = arch_int(o, "visionLayers", 0);
    a.vision_heads = arch_int(o, "visionHeads", 1);
    a.patch = arch_int(o, "patchSize", 1);
    a.grid = arch_int(o, "grid", 1);
  }
  a.resolution = arch_int(o, "resolution", 1);
  a.context_length = arch_int(o, "contextLength", 1);
  a.vocab_size = arch_int(o, "vocabSize", 1);
  a.text_width = arch_int(o, "textWidth", 1);
  a.text_layers = arch_int(o, "textLayers", 0);
  a.text_heads = arch_int(o, "textHeads", 1);
  Napi::Value act = o.Get("activation");
  if (!act.IsUndefined()) {
    DWC_ARG_CHECK(act.IsString(), "ClipModel: architecture field 'activation' must be 'quick_gelu' or 'gelu'");
    const std::string s = act.As<Napi::String>().Utf8Value();
    DWC_ARG_CHECK(s == "quick_gelu" || s == "gelu", "ClipModel: architecture field 'activation' must be 'quick_gelu' or 'gelu', got '" << s << "'");
    a.gelu = s == "gelu";
  }
  return a;
}

namespace {

ClipObject::ClipObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ClipObject>(info) {
  Napi::Env env = info.Env();
  try {
    DWC_ARG_CHECK(info.Length() >= 1 && info[0].IsObject(), "ClipModel: argument 'arch' must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    ClipArch a = clip_arch_from_js(o);
    std::string device = "cpu";  // options.device: the backend (backend::backend_for names an unavailable one)
    if (info.Length() >= 2 && !info[1].IsUndefined()) {
      DWC_ARG_CHECK(info[1].IsObject(), "ClipModel: argument 'options' must be an object");
      Napi::Value d = info[1].As<Napi::Object>().Get("device");
      if (!d.IsUndefined()) {
        DWC_ARG_CHECK(d.IsString(), "ClipModel: option 'device' must be a string ('cpu', 'cuda' or 'cuda:N')");
        device = d.As<Napi::String>().Utf8Value();
      }
    }
    model = std::make_unique<ClipModel>(a, backend::backend_for(device));
  } catch (const Error& e) {
    throw make_js_error(env, error_code_name(e.code()), e.what());
  }
}

// A copy of n floats of the model's backend memory (outputs in its arena).
Napi::Float32Array f32_copy(Napi::Env env, backend::Backend& be, const float* p, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) be.download(a.Data(), p, n * sizeof(float));
  return a;
}

// params() -> [{name, shape}] in buffer order
Napi::Value ClipObject::Params(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env);
  uint32_t k = 0;
  for (const ParamSpec& p : model->params.specs) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", p.name);
    Napi::Array sh = Napi::Array::New(env, p.shape.size());
    for (size_t i = 0; i < p.shape.size(); ++i) sh.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(p.shape[i])));
    o.Set("shape", sh);
    a.Set(k++, o);
  }
  return a;
}

const ParamSpec& spec_arg(const ClipModel& m, const Napi::CallbackInfo& info, const char* method) {
  DWC_ARG_CHECK(info.Length() > 0 && info[0].IsString(), "ClipModel." << method << ": argument 'name' must be a string");
  const std::string name = info[0].As<Napi::String>();
  const ParamSpec* p = m.params.find(name);
  DWC_ARG_CHECK(p, "ClipModel." << method << ": no parameter named '" << name << "'");
  return *p;
}

BackendArray* kind_buf(ClipModel& m, const Napi::CallbackInfo& info, size_t idx, const char* method) {
  std::string kind = "param";
  if (info.Length() > idx && !info[idx].IsUndefined()) {
    DWC_ARG_CHECK(info[idx].IsString(), "ClipModel." << method << ": argument 'kind' must be 'param', 'grad', 'm' or 'v'");
    kind = info[idx].As<Napi::String>().Utf8Value();
  }
  BackendArray* b = kind == "param" ? &m.params.params : kind == "grad" ? &m.params.grads : kind == "m" ? &m.params.m : kind == "v" ? &m.params.v : nullptr;
  DWC_ARG_CHECK(b, "ClipModel." << method << ": argument 'kind' must be 'param', 'grad', 'm' or 'v', got '" << kind << "'");
  return b;
}

// getTensor(name, kind = 'param') -> Float32Array (a copy)
Napi::Value ClipObject::GetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value r;
  guarded(env, [&] {
    check_idle("getTensor");
    const ParamSpec& p = spec_arg(*model, info, "getTensor");
    BackendArray* b = kind_buf(*model, info, 1, "getTensor");
    Napi::Float32Array a = Napi::Float32Array::New(env, static_cast<size_t>(p.numel));
    model->params.read(*b, p.offset, a.Data(), p.numel);
    r = a;
  });
  return r.IsEmpty() ? env.Undefined() : r;
}

// setTensor(name, data: Float32Array, kind = 'param')
Napi::Value ClipObject::SetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    check_idle("setTensor");
    const ParamSpec& p = spec_arg(*model, info, "setTensor");
    DWC_ARG_CHECK(info.Length() > 1 && info[1].IsTypedArray() && info[1].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array,
                  "ClipModel.setTensor: argument 'data' for '" << p.name << "' must be a Float32Array");
    Napi::Float32Array a = info[1].As<Napi::Float32Array>();
    DWC_ARG_CHECK(static_cast<int64_t>(a.ElementLength()) == p.numel, "ClipModel.setTensor: '" << p.name << "' has shape " << shape_str(p.shape) << " ("
                                                                                               << p.numel << " elements) but 'data' has "
                                                                                               << a.ElementLength());
    for (size_t i = 0; i < a.ElementLength(); ++i)
      DWC_CHECK(std::isfinite(a[i]), Numeric, "ClipModel.setTensor: '" << p.name << "' holds a non-finite value at index " << i);
    BackendArray* b = kind_buf(*model, info, 2, "setTensor");
    model->params.write(*b, p.offset, a.Data(), static_cast<int64_t>(a.ElementLength()));
  });
  return env.Undefined();
}

Napi::Value ClipObject::GetStep(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(model->params.adam_step)); }

Napi::Value ClipObject::SetStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    check_idle("setStep");
    const double d = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    DWC_ARG_CHECK(d >= 0 && d == std::floor(d), "ClipModel.setStep: argument 'step' must be a non-negative integer");
    model->params.adam_step = static_cast<int64_t>(d);
  });
  return env.Undefined();
}

Napi::Value ClipObject::queue(Napi::Env env, const char* method, AsyncWork work, AsyncDone done, std::vector<Napi::Reference<Napi::Value>> refs,
                              Napi::Object self) {
  return queue_model_call(env, busy, std::string("ClipModel.") + method, self,
                          std::make_shared<std::vector<Napi::Reference<Napi::Value>>>(std::move(refs)), std::move(work), std::move(done));
}

// Reads argument `idx` as a typed array of `want` elements; keeps it referenced.
template <typename T>
const T* typed_arg(const Napi::CallbackInfo& info, size_t idx, const char* method, const char* name, napi_typedarray_type type, int64_t want,
                   const char* shape, std::vector<Napi::Reference<Napi::Value>>& refs) {
  const char* tname = type == napi_float32_array ? "Float32Array" : "Int32Array";
  DWC_ARG_CHECK(info.Length() > idx && info[idx].IsTypedArray() && info[idx].As<Napi::TypedArray>().TypedArrayType() == type,
                "ClipModel." << method << ": argument '" << name << "' must be an " << tname << " " << shape);
  Napi::TypedArray ta = info[idx].As<Napi::TypedArray>();
  DWC_ARG_CHECK(static_cast<int64_t>(ta.ElementLength()) == want,
                "ClipModel." << method << ": argument '" << name << "' has " << ta.ElementLength() << " elements but " << shape << " needs " << want);
  refs.push_back(Napi::Persistent(info[idx]));
  return reinterpret_cast<const T*>(static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
}

int count_arg(const Napi::CallbackInfo& info, size_t idx, const char* method) {
  const double d = info.Length() > idx && info[idx].IsNumber() ? info[idx].As<Napi::Number>().DoubleValue() : -1;
  DWC_ARG_CHECK(d >= 1 && d <= (1 << 24) && d == std::floor(d), "ClipModel." << method << ": argument 'n' must be a positive integer");
  return static_cast<int>(d);
}

void check_finite(const float* p, int64_t n, const char* method, const char* name) {
  for (int64_t i = 0; i < n; ++i)
    DWC_CHECK(std::isfinite(p[i]), Numeric, "ClipModel." << method << ": argument '" << name << "' holds a non-finite value at index " << i);
}

// encodeImage(pixels: Float32Array [n,3,R,R], n) -> Promise<Float32Array [n,E]>
Napi::Value ClipObject::EncodeImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Reference<Napi::Value>> refs;
  const float* px = nullptr;
  int n = 0;
  if (!guarded(env, [&] {
        check_idle("encodeImage");
        n = count_arg(info, 1, "encodeImage");
        const int64_t R = model->arch.resolution;
        px = typed_arg<float>(info, 0, "encodeImage", "pixels", napi_float32_array, int64_t(n) * 3 * R * R, "[n, 3, R, R]", refs);
        check_finite(px, int64_t(n) * 3 * R * R, "encodeImage", "pixels");
      }))
    return env.Undefined();
  ClipModel* m = model.get();
  auto out = std::make_shared<const float*>(nullptr);
  return queue(
      env, "encodeImage", [m, px, n, out] { *out = m->encode_image(px, n); },
      [m, n, out](Napi::Env e) -> Napi::Value { return f32_copy(e, m->backend(), *out, size_t(n) * m->arch.embed_dim); }, std::move(refs),
      info.This().As<Napi::Object>());
}

// encodeText(ids: Int32Array [n,ctx], n) -> Promise<Float32Array [n,E]>
Napi::Value ClipObject::EncodeText(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Reference<Napi::Value>> refs;
  const int32_t* ids = nullptr;
  int n = 0;
  if (!guarded(env, [&] {
        check_idle("encodeText");
        n = count_arg(info, 1, "encodeText");
        ids = typed_arg<int32_t>(info, 0, "encodeText", "ids", napi_int32_array, int64_t(n) * model->arch.context_length, "[n, contextLength]", refs);
      }))
    return env.Undefined();
  ClipModel* m = model.get();
  auto out = std::make_shared<const float*>(nullptr);
  return queue(
      env, "encodeText", [m, ids, n, out] { *out = m->encode_text(ids, n); },
      [m, n, out](Napi::Env e) -> Napi::Value { return f32_copy(e, m->backend(), *out, size_t(n) * m->arch.embed_dim); }, std::move(refs),
      info.This().As<Napi::Object>());
}

Napi::Object step_object(Napi::Env e, const ClipModel& m, const ClipStepOut& o, int n) {
  Napi::Object r = Napi::Object::New(e);
  const size_t E = m.arch.embed_dim;
  r.Set("loss", Napi::Number::New(e, o.loss));
  r.Set("imageEmbeds", f32_copy(e, m.backend(), o.image_embeds, n * E));
  r.Set("textEmbeds", f32_copy(e, m.backend(), o.text_embeds, n * E));
  r.Set("logitsPerImage", f32_copy(e, m.backend(), o.logits_per_image, size_t(n) * n));
  r.Set("step", Napi::Number::New(e, static_cast<double>(m.params.adam_step)));
  return r;
}

// lossAndGrad(pixels, ids, n, bnTrain = false) -> Promise<{loss, imageEmbeds, textEmbeds, logitsPerImage}>;
// eval mode (bnTrain: BatchNorm towers in train mode, running statistics updated, no parameter
// update); the gradients stay readable with getTensor(name, 'grad').
Napi::Value ClipObject::LossAndGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Reference<Napi::Value>> refs;
  const float* px = nullptr;
  const int32_t* ids = nullptr;
  int n = 0;
  bool bn_train = false;
  if (!guarded(env, [&] {
        check_idle("lossAndGrad");
        n = count_arg(info, 2, "lossAndGrad");
        const int64_t R = model->arch.resolution;
        px = typed_arg<float>(info, 0, "lossAndGrad", "pixels", napi_float32_array, int64_t(n) * 3 * R * R, "[n, 3, R, R]", refs);
        ids = typed_arg<int32_t>(info, 1, "lossAndGrad", "ids", napi_int32_array, int64_t(n) * model->arch.context_length, "[n, contextLength]", refs);
        check_finite(px, int64_t(n) * 3 * R * R, "lossAndGrad", "pixels");
        if (info.Length() > 3 && !info[3].IsUndefined()) {
          DWC_ARG_CHECK(info[3].IsBoolean(), "ClipModel.lossAndGrad: argument 'bnTrain' must be a boolean");
          bn_train = info[3].As<Napi::Boolean>().Value();
        }
      }))
    return env.Undefined();
  ClipModel* m = model.get();
  auto out = std::make_shared<ClipStepOut>();
  return queue(
      env, "lossAndGrad", [m, px, ids, n, bn_train, out] { *out = m->loss_and_grad(px, ids, n, true, bn_train); },
      [m, n, out](Napi::Env e) -> Napi::Value { return step_object(e, *m, *out, n); }, std::move(refs), info.This().As<Napi::Object>());
}

// trainStep(pixels, ids, n, {lr, beta1?, beta2?, eps?, weightDecay?, bnTrain?}) -> Promise<{loss, ..., step}>
Napi::Value ClipObject::TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Reference<Napi::Value>> refs;
  const float* px = nullptr;
  const int32_t* ids = nullptr;
  int n = 0;
  ClipAdam adam;
  if (!guarded(env, [&] {
        check_idle("trainStep");
        n = count_arg(info, 2, "trainStep");
        const int64_t R = model->arch.resolution;
        px = typed_arg<float>(info, 0, "trainStep", "pixels", napi_float32_array, int64_t(n) * 3 * R * R, "[n, 3, R, R]", refs);
        ids = typed_arg<int32_t>(info, 1, "trainStep", "ids", napi_int32_array, int64_t(n) * model->arch.context_length, "[n, contextLength]", refs);
        check_finite(px, int64_t(n) * 3 * R * R, "trainStep", "pixels");
        DWC_ARG_CHECK(info.Length() > 3 && info[3].IsObject(), "ClipModel.trainStep: argument 'optim' must be an object {lr, beta1?, beta2?, eps?, weightDecay?}");
        Napi::Object o = info[3].As<Napi::Object>();
        Napi::Array keys = o.GetPropertyNames();
        for (uint32_t i = 0; i < keys.Length(); ++i) {
          const std::string k = keys.Get(i).As<Napi::String>();
          Napi::Value v = o.Get(k);
          if (v.IsUndefined()) continue;
          if (k == "bnTrain") {
            DWC_ARG_CHECK(v.IsBoolean(), "ClipModel.trainStep: option 'bnTrain' must be a boolean");
            adam.bn_train = v.As<Napi::Boolean>().Value();
            continue;
          }
          float* f = k == "lr" ? &adam.lr : k == "beta1" ? &adam.beta1 : k == "beta2" ? &adam.beta2 : k == "eps" ? &adam.eps : k == "weightDecay" ? &adam.weight_decay : nullptr;
          DWC_ARG_CHECK(f, "ClipModel.trainStep: unknown option '" << k << "'");
          DWC_ARG_CHECK(v.IsNumber() && std::isfinite(v.As<Napi::Number>().DoubleValue()) && v.As<Napi::Number>().DoubleValue() >= 0,
                        "ClipModel.trainStep: option '" << k << "' must be a finite non-negative number");
          *f = v.As<Napi::Number>().FloatValue();
        }
        DWC_ARG_CHECK(!o.Get("lr").IsUndefined(), "ClipModel.trainStep: option 'lr' is required");
        DWC_ARG_CHECK(adam.beta1 < 1 && adam.beta2 < 1, "ClipModel.trainStep: options 'beta1' and 'beta2' must be below 1");
      }))
    return env.Undefined();
  ClipModel* m = model.get();
  auto out = std::make_shared<ClipStepOut>();
  return queue(
      env, "trainStep", [m, px, ids, n, adam, out] { *out = m->train_step(px, ids, n, adam); },
      [m, n, out](Napi::Env e) -> Napi::Value { return step_object(e, *m, *out, n); }, std::move(refs), info.This().As<Napi::Object>());
}

// stats() -> {params (floats), arenaBytes, arenaGrows, step}
Napi::Value ClipObject::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("paramFloats", Napi::Number::New(env, static_cast<double>(model->params.total())));
  o.Set("arenaBytes", Napi::Number::New(env, static_cast<double>(model->arena.capacity())));
  o.Set("arenaGrows", Napi::Number::New(env, model->arena.grow_count()));
  o.Set("step", Napi::Number::New(env, static_cast<double>(model->params.adam_step)));
  return o;
}

}  // namespace

DWC_ADDON_MODULE("clip", [](Napi::Env env, Napi::Object exports) { exports.Set("ClipModel", ClipObject::Init(env)); });

}  // namespace dwc
