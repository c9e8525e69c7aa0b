// JS class `Model`: the native DWC model (native/model/trainer.h). Argument checks name the bad
// field; training and embedding run in async workers; a model in use by an async call refuses
// every other call with DWC_BUSY.
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <tuple>

#include "../core/threads.h"
#include "../model/clip.h"
#include "../model/trainer.h"
#include "addon.h"

namespace dwc {
namespace {

class ModelObject : public Napi::ObjectWrap<ModelObject> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Model",
                       {InstanceMethod("params", &ModelObject::Params), InstanceMethod("getTensor", &ModelObject::GetTensor),
                        InstanceMethod("setTensor", &ModelObject::SetTensor), InstanceMethod("getStep", &ModelObject::GetStep),
                        InstanceMethod("setStep", &ModelObject::SetStep), InstanceMethod("trainStep", &ModelObject::TrainStep),
                        InstanceMethod("lossAndGrad", &ModelObject::LossAndGrad), InstanceMethod("embed", &ModelObject::Embed),
                        InstanceMethod("stats", &ModelObject::Stats), InstanceMethod("trunkFeatures", &ModelObject::TrunkFeatures),
                        InstanceMethod("setIteration", &ModelObject::SetIteration), InstanceMethod("awTargets", &ModelObject::AwTargets),
                        InstanceMethod("setLearningRate", &ModelObject::SetLearningRate), InstanceAccessor("busy", &ModelObject::Busy, nullptr)});
  }

  explicit ModelObject(const Napi::CallbackInfo& info);
  std::unique_ptr<Model> model;
  std::atomic<bool> busy{false};

 private:
  Napi::Value Params(const Napi::CallbackInfo& info);
  Napi::Value GetTensor(const Napi::CallbackInfo& info);
  Napi::Value SetTensor(const Napi::CallbackInfo& info);
  Napi::Value GetStep(const Napi::CallbackInfo& info);
  Napi::Value SetStep(const Napi::CallbackInfo& info);
  Napi::Value TrainStep(const Napi::CallbackInfo& info);
  Napi::Value LossAndGrad(const Napi::CallbackInfo& info);
  Napi::Value Embed(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value TrunkFeatures(const Napi::CallbackInfo& info);
  Napi::Value SetIteration(const Napi::CallbackInfo& info);
  Napi::Value AwTargets(const Napi::CallbackInfo& info);
  Napi::Value SetLearningRate(const Napi::CallbackInfo& info);
  Napi::Value Busy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy.load()); }
  void check_idle(const char* method) const {
    DWC_CHECK(!busy.load(), Busy, "Model." << method << ": the model is in use by a running async call (await it first)");
  }
};

// ---- argument readers ----------------------------------------------------------------------

int dim_arg(const Napi::Object& o, const char* key, bool required) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) {
    DWC_ARG_CHECK(!required, "Model: missing dimension '" << key << "'");
    return 0;
  }
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  DWC_ARG_CHECK(d >= 1 && d <= 1 << 24 && d == std::floor(d), "Model: dimension '" << key << "' must be a positive integer");
  return static_cast<int>(d);
}

void read_options(const Napi::Value& v, ModelOptions& o, bool* reference_trunk_steps = nullptr) {
  if (v.IsUndefined() || v.IsNull()) return;
  DWC_ARG_CHECK(v.IsObject(), "Model: 'options' must be an object");
  Napi::Object obj = v.As<Napi::Object>();
  Napi::Array keys = obj.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    std::string k = keys.Get(i).As<Napi::String>();
    Napi::Value x = obj.Get(k);
    if (x.IsUndefined()) continue;
    bool* flag = k == "masked"                  ? &o.masked
                 : k == "mutualTargetReference" ? &o.mutual_target_reference
                 : k == "detachSoftLabels"      ? &o.detach_soft_labels
                 : k == "noSsg"                 ? &o.no_ssg
                 : k == "noEditors"             ? &o.no_editors
                 : k == "fixedW"                ? &o.fixed_w
                 : k == "noMutual"              ? &o.no_mutual
                 : k == "awGlobal"              ? &o.aw_global
                 : k == "awLocal"               ? &o.aw_local
                 : k == "textRelu"              ? &o.text_relu
                                                : nullptr;
    if (k == "referenceTrunkSteps" && reference_trunk_steps) flag = reference_trunk_steps;
    if (flag) {
      DWC_ARG_CHECK(x.IsBoolean(), "Model: option '" << k << "' must be a boolean");
      *flag = x.As<Napi::Boolean>().Value();
      continue;
    }
    float* num = k == "dropout"       ? &o.dropout
                 : k == "globalDropout" ? &o.global_dropout
                 : k == "alpha"       ? &o.alpha
                 : k == "tau"         ? &o.tau
                 : k == "mutualScale" ? &o.mutual_scale
                 : k == "mutualWeightGlobal" ? &o.mutual_weight_global
                 : k == "mutualWeightLocal" ? &o.mutual_weight_local
                 : k == "lr"          ? &o.lr
                 : k == "localLrFactor" ? &o.local_lr_factor
                 : k == "encoderLrFactor" ? &o.encoder_lr_factor
                 : k == "beta1"       ? &o.beta1
                 : k == "beta2"       ? &o.beta2
                 : k == "eps"         ? &o.eps
                 : k == "weightDecay" ? &o.weight_decay
                 : k == "fixedWValue" ? &o.fixed_w_value
                 : k == "awTau"       ? &o.aw_tau
                 : k == "awLambda"    ? &o.aw_lambda
                                      : nullptr;
    if (num) {
      DWC_ARG_CHECK(x.IsNumber() && std::isfinite(x.As<Napi::Number>().DoubleValue()), "Model: option '" << k << "' must be a finite number");
      *num = x.As<Napi::Number>().FloatValue();
      continue;
    }
    if (k == "device") {  // backend::backend_for checks the value and the device when the model is made
      DWC_ARG_CHECK(x.IsString(), "Model: option 'device' must be a string ('cpu', 'cuda' or 'cuda:N')");
      o.device = x.As<Napi::String>().Utf8Value();
      continue;
    }
    if (k == "seed") {
      double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
      DWC_ARG_CHECK(d >= 0 && d == std::floor(d) && d < 9007199254740992.0, "Model: option 'seed' must be a non-negative integer");
      o.seed = static_cast<uint64_t>(d);
      continue;
    }
    DWC_ARG_CHECK(false, "Model: unknown option '" << k << "'");
  }
  DWC_ARG_CHECK(o.dropout >= 0.f && o.dropout < 1.f, "Model: option 'dropout' must be in [0, 1)");
  DWC_ARG_CHECK(o.global_dropout < 1.f, "Model: option 'globalDropout' must be in [0, 1) (or negative: 'dropout')");
  DWC_ARG_CHECK(o.mutual_weight_global >= 0.f, "Model: option 'mutualWeightGlobal' must be >= 0");
  DWC_ARG_CHECK(o.mutual_weight_local >= 0.f, "Model: option 'mutualWeightLocal' must be >= 0");
}

// A batch whose typed arrays stay referenced (alive) until the call finishes.
struct HeldBatch {
  Batch b;
  std::vector<Napi::Reference<Napi::Value>> refs;
};

template <typename T>
const T* typed_field(const Napi::Object& o, const char* key, napi_typedarray_type type, int64_t want, const char* shape, HeldBatch& hb) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  const char* tname = type == napi_float32_array ? "Float32Array" : "Int32Array";
  DWC_ARG_CHECK(v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == type, "batch: '" << key << "' must be a " << tname);
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  DWC_ARG_CHECK(static_cast<int64_t>(ta.ElementLength()) == want,
                "batch: '" << key << "' has " << ta.ElementLength() << " elements but " << shape << " needs " << want);
  hb.refs.push_back(Napi::Persistent(v));
  return reinterpret_cast<const T*>(static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
}

int batch_int(const Napi::Object& o, const char* key, int def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  DWC_ARG_CHECK(d >= 1 && d <= 1 << 24 && d == std::floor(d), "batch: '" << key << "' must be a positive integer");
  return static_cast<int>(d);
}

// batch = {B, eImg, eTxt, eTarget, fmap, fmapTarget, H, W, tokens, L, lengths, labels}
void read_batch(const Napi::Value& v, const Model& m, HeldBatch& hb) {
  DWC_ARG_CHECK(v.IsObject(), "Model: argument 'batch' must be an object");
  Napi::Object o = v.As<Napi::Object>();
  Batch& b = hb.b;
  DWC_ARG_CHECK(!o.Get("B").IsUndefined(), "batch: missing 'B'");
  b.B = batch_int(o, "B", 0);
  const int64_t B = b.B;
  const ModelDims& d = m.dims;
  b.Dc = d.Dc;
  b.e_img = typed_field<float>(o, "eImg", napi_float32_array, B * d.Dc, "[B, Dc]", hb);
  b.e_txt = typed_field<float>(o, "eTxt", napi_float32_array, B * d.Dc, "[B, Dc]", hb);
  b.e_target = typed_field<float>(o, "eTarget", napi_float32_array, B * d.Dc, "[B, Dc]", hb);
  b.labels = typed_field<int32_t>(o, "labels", napi_int32_array, B, "[B]", hb);
  // PL4CIR §3: a frozen encoder's embeddings as the source of w* ({awDim, awRef, awTxt, awTgt})
  if (!o.Get("awRef").IsUndefined() || !o.Get("awTxt").IsUndefined() || !o.Get("awTgt").IsUndefined()) {
    DWC_ARG_CHECK(!o.Get("awDim").IsUndefined(), "batch: 'awDim' is required with 'awRef' / 'awTxt' / 'awTgt'");
    b.aw_dim = batch_int(o, "awDim", 0);
    const int64_t n = B * b.aw_dim;
    b.aw_ref = typed_field<float>(o, "awRef", napi_float32_array, n, "[B, awDim]", hb);
    b.aw_txt = typed_field<float>(o, "awTxt", napi_float32_array, n, "[B, awDim]", hb);
    b.aw_tgt = typed_field<float>(o, "awTgt", napi_float32_array, n, "[B, awDim]", hb);
    DWC_ARG_CHECK(b.aw_ref && b.aw_txt && b.aw_tgt, "batch: 'awRef', 'awTxt' and 'awTgt' go together");
  }
  if (m.trunk || m.encoder || m.clip_encoder) {
    b.Hi = batch_int(o, "Hi", 0);
    b.Wi = batch_int(o, "Wi", 0);
    if (!o.Get("images").IsUndefined() || !o.Get("imagesTarget").IsUndefined())
      DWC_ARG_CHECK(b.Hi > 0 && b.Wi > 0, "batch: 'Hi' and 'Wi' (image size) are required with 'images'");
    const int64_t Pi = int64_t(b.Hi) * b.Wi;
    b.images = typed_field<float>(o, "images", napi_float32_array, B * 3 * Pi, "[B, 3, Hi, Wi]", hb);
    b.images_target = typed_field<float>(o, "imagesTarget", napi_float32_array, B * 3 * Pi, "[B, 3, Hi, Wi]", hb);
  }
  if (m.local || m.encoder || m.clip_encoder) {
    b.C = d.C;
    b.H = batch_int(o, "H", 0);
    b.W = batch_int(o, "W", 0);
    b.L = batch_int(o, "L", 0);
    const int64_t P = int64_t(b.H) * b.W;
    if (!o.Get("fmap").IsUndefined() || !o.Get("fmapTarget").IsUndefined())
      DWC_ARG_CHECK(b.H > 0 && b.W > 0, "batch: 'H' and 'W' (feature-map size) are required with 'fmap'");
    b.fmap = typed_field<float>(o, "fmap", napi_float32_array, B * d.C * P, "[B, C, H, W]", hb);
    b.fmap_target = typed_field<float>(o, "fmapTarget", napi_float32_array, B * d.C * P, "[B, C, H, W]", hb);
    if (!o.Get("tokens").IsUndefined()) DWC_ARG_CHECK(b.L > 0, "batch: 'L' (tokens per text) is required with 'tokens'");
    b.tokens = typed_field<int32_t>(o, "tokens", napi_int32_array, B * b.L, "[B, L]", hb);
    b.lengths = typed_field<int32_t>(o, "lengths", napi_int32_array, B, "[B]", hb);
    if (b.tokens)
      for (int64_t i = 0; i < B * b.L; ++i)
        DWC_ARG_CHECK(b.tokens[i] >= 0 && b.tokens[i] < d.vocab, "batch: 'tokens' holds id " << b.tokens[i] << " outside [0, " << d.vocab << ")");
    if (b.lengths)
      for (int64_t i = 0; i < B; ++i)
        DWC_ARG_CHECK(b.lengths[i] >= 1 && b.lengths[i] <= b.L, "batch: 'lengths' holds " << b.lengths[i] << " outside [1, L = " << b.L << "]");
  }
}

Napi::Float32Array f32_copy(Napi::Env env, const float* p, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) std::memcpy(a.Data(), p, n * sizeof(float));
  return a;
}

// A copy of n floats of the model's backend memory (outputs in its arenas).
Napi::Float32Array f32_download(Napi::Env env, backend::Backend& be, const float* p, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) be.download(a.Data(), p, n * sizeof(float));
  return a;
}

Napi::Object record_object(Napi::Env env, const StreamRecord& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("contrastive", r.contrastive);
  o.Set("mutual", r.mutual);
  o.Set("query", f32_copy(env, r.query.data(), r.query.size()));
  o.Set("target", f32_copy(env, r.target.data(), r.target.size()));
  o.Set("weight", f32_copy(env, r.weight.data(), r.weight.size()));
  if (r.aw) {
    // PL4CIR §3: L_w, mean |w − w*| and w*
    o.Set("aw", r.aw_loss);
    o.Set("awGap", r.aw_gap);
    o.Set("wStar", f32_copy(env, r.w_star.data(), r.w_star.size()));
  }
  return o;
}

// ---- methods -------------------------------------------------------------------------------

// new Model({Dc, D, C?, E?, vocab?}, options?)
ModelObject::ModelObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelObject>(info) {
  Napi::Env env = info.Env();
  try {
    DWC_ARG_CHECK(info.Length() >= 1 && info[0].IsObject(), "Model: argument 'dims' must be an object {Dc?, D, C?, E?, vocab?, trunk?, encoder?}");
    Napi::Object d = info[0].As<Napi::Object>();
    ModelDims dims;
    dims.Dc = dim_arg(d, "Dc", false);
    dims.D = dim_arg(d, "D", true);
    dims.C = dim_arg(d, "C", false);
    dims.E = dim_arg(d, "E", false);
    dims.vocab = dim_arg(d, "vocab", false);
    dims.enc_channels = dim_arg(d, "encChannels", false);
    dims.enc_E = dim_arg(d, "encE", false);
    dims.enc_grid = dim_arg(d, "encGrid", false);
    // encoder "clip" (docs/MODEL.md §16): the CLIP architecture and the pieces per word
    Napi::Value ca = d.Get("clip");
    if (!ca.IsUndefined() && !ca.IsNull()) {
      DWC_ARG_CHECK(ca.IsObject(), "Model: dimension 'clip' must be a CLIP architecture object (as ClipModel takes)");
      dims.clip_arch = std::make_shared<ClipArch>(clip_arch_from_js(ca.As<Napi::Object>()));
    }
    dims.clip_pieces = dim_arg(d, "clipPieces", false);
    for (const char* key : {"trunk", "encoder"}) {
      Napi::Value v = d.Get(key);
      if (v.IsUndefined() || v.IsNull()) continue;
      DWC_ARG_CHECK(v.IsString(), "Model: dimension '" << key << "' must be a string");
      (std::string(key) == "trunk" ? dims.trunk : dims.encoder) = v.As<Napi::String>().Utf8Value();
    }
    // trunkWidth / trunkLayers: a reduced ResNet (or small-trunk width), e.g. trace fixtures
    TrunkShape ts;
    ts.width = dim_arg(d, "trunkWidth", false);
    Napi::Value lv = d.Get("trunkLayers");
    if (!lv.IsUndefined() && !lv.IsNull()) {
      DWC_ARG_CHECK(lv.IsArray() && lv.As<Napi::Array>().Length() == 4, "Model: dimension 'trunkLayers' must be an array of 4 positive integers");
      Napi::Array la = lv.As<Napi::Array>();
      for (uint32_t i = 0; i < 4; ++i) {
        Napi::Value e = la.Get(i);
        const double x = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1;
        DWC_ARG_CHECK(x >= 1 && x <= 64 && x == std::floor(x), "Model: dimension 'trunkLayers' must be an array of 4 integers in [1, 64]");
        ts.layers[i] = static_cast<int>(x);
      }
    }
    ModelOptions opt;
    bool ref_steps = false;
    if (info.Length() >= 2) read_options(info[1], opt, &ref_steps);
    model = std::make_unique<Model>(dims, opt, ts);
    model->reference_trunk_steps = ref_steps;
  } catch (const Error& e) {
    throw make_js_error(env, error_code_name(e.code()), e.what());
  }
}

// params() -> [{name, stream, shape, trainable, counter}]
Napi::Value ModelObject::Params(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env);
  uint32_t k = 0;
  for (auto& [sname, pb] : model->param_buffers()) {
    for (const ParamSpec& p : pb->specs) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", p.name);
      o.Set("stream", sname);
      Napi::Array sh = Napi::Array::New(env, p.shape.size());
      for (size_t i = 0; i < p.shape.size(); ++i) sh.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(p.shape[i])));
      o.Set("shape", sh);
      o.Set("trainable", p.trainable);
      o.Set("counter", p.is_counter);
      a.Set(k++, o);
    }
  }
  return a;
}

struct Located {
  ParamBuffer* pb;
  const ParamSpec* spec;
  BackendArray* buf;
};

Located locate(const Model& m, const Napi::CallbackInfo& info, const char* method, int kind_arg) {
  DWC_ARG_CHECK(info.Length() > 0 && info[0].IsString(), "Model." << method << ": argument 'name' must be a string");
  std::string name = info[0].As<Napi::String>();
  std::string kind = "param";
  if (static_cast<int>(info.Length()) > kind_arg && !info[kind_arg].IsUndefined()) {
    DWC_ARG_CHECK(info[kind_arg].IsString(), "Model." << method << ": argument 'kind' must be 'param', 'grad', 'm' or 'v'");
    kind = info[kind_arg].As<Napi::String>().Utf8Value();
  }
  for (auto& [sname, pb] : m.param_buffers()) {
    const ParamSpec* p = pb->find(name);
    if (!p) continue;
    BackendArray* buf = kind == "param" ? &pb->params
                              : kind == "grad"  ? &pb->grads
                              : kind == "m"     ? &pb->m
                              : kind == "v"     ? &pb->v
                                                : nullptr;
    DWC_ARG_CHECK(buf, "Model." << method << ": argument 'kind' must be 'param', 'grad', 'm' or 'v', got '" << kind << "'");
    return {pb, p, buf};
  }
  DWC_ARG_CHECK(false, "Model." << method << ": no parameter named '" << name << "'");
  return {};
}

// getTensor(name, kind = 'param') -> Float32Array (a copy)
Napi::Value ModelObject::GetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value r;
  guarded(env, [&] {
    check_idle("getTensor");
    Located l = locate(*model, info, "getTensor", 1);
    Napi::Float32Array a = Napi::Float32Array::New(env, static_cast<size_t>(l.spec->numel));
    l.pb->read(*l.buf, l.spec->offset, a.Data(), l.spec->numel);
    r = a;
  });
  return r.IsEmpty() ? env.Undefined() : r;
}

// setTensor(name, data: Float32Array, kind = 'param')
Napi::Value ModelObject::SetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    check_idle("setTensor");
    Located l = locate(*model, info, "setTensor", 2);
    DWC_ARG_CHECK(info.Length() > 1 && info[1].IsTypedArray() && info[1].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array,
                  "Model.setTensor: argument 'data' for '" << l.spec->name << "' must be a Float32Array");
    Napi::Float32Array a = info[1].As<Napi::Float32Array>();
    DWC_ARG_CHECK(static_cast<int64_t>(a.ElementLength()) == l.spec->numel, "Model.setTensor: '" << l.spec->name << "' has shape "
                                                                                                 << shape_str(l.spec->shape) << " ("
                                                                                                 << l.spec->numel << " elements) but 'data' has "
                                                                                                 << a.ElementLength());
    for (size_t i = 0; i < a.ElementLength(); ++i)
      DWC_CHECK(std::isfinite(a[i]), Numeric, "Model.setTensor: '" << l.spec->name << "' holds a non-finite value at index " << i);
    l.pb->write(*l.buf, l.spec->offset, a.Data(), l.spec->numel);
  });
  return env.Undefined();
}

Stream* stream_arg(const Model& m, const Napi::CallbackInfo& info, const char* method) {
  DWC_ARG_CHECK(info.Length() > 0 && info[0].IsString(), "Model." << method << ": argument 'stream' must be 'global' or 'local'");
  std::string n = info[0].As<Napi::String>();
  Stream* s = m.stream(n);
  DWC_ARG_CHECK(s, "Model." << method << ": argument 'stream' names no stream of this model: '" << n << "'");
  return s;
}

// getStep(stream) -> Adam step count
Napi::Value ModelObject::GetStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value r;
  guarded(env, [&] { r = Napi::Number::New(env, static_cast<double>(stream_arg(*model, info, "getStep")->params.adam_step)); });
  return r.IsEmpty() ? env.Undefined() : r;
}

Napi::Value ModelObject::SetStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    check_idle("setStep");
    Stream* s = stream_arg(*model, info, "setStep");
    double d = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
    DWC_ARG_CHECK(d >= 0 && d == std::floor(d), "Model.setStep: argument 'step' must be a non-negative integer");
    // every buffer training with this stream (its trunk / encoder) steps with it
    for (auto& [sname, pb] : model->param_buffers())
      if (sname == s->name()) pb->adam_step = static_cast<int64_t>(d);
  });
  return env.Undefined();
}

// trainStep(batch) -> Promise<{iteration, global: {contrastive, mutual, query, target, weight}, local?}>
Napi::Value ModelObject::TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto hb = std::make_unique<HeldBatch>();
  if (!guarded(env, [&] {
        check_idle("trainStep");
        DWC_ARG_CHECK(info.Length() > 0, "Model.trainStep: missing argument 'batch'");
        read_batch(info[0], *model, *hb);
      }))
    return env.Undefined();
  Model* m = model.get();
  const Batch* b = &hb->b;
  return queue_model_call(
      env, busy, "Model.trainStep", info.This().As<Napi::Object>(), std::shared_ptr<HeldBatch>(std::move(hb)), [m, b] { m->train_step(*b); },
      [m](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("iteration", Napi::Number::New(e, static_cast<double>(m->iteration)));
        if (m->global) o.Set("global", record_object(e, m->rec[0]));
        if (m->local) o.Set("local", record_object(e, m->rec[1]));
        return o;
      });
}

// lossAndGrad(stream, batch, partner?: {query, target}, rngStream = 0) -> {contrastive, mutual, query, target, weight}
// Synchronous; leaves the stream's gradients readable with getTensor(name, 'grad'). For tests.
Napi::Value ModelObject::LossAndGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value r;
  guarded(env, [&] {
    check_idle("lossAndGrad");
    Stream* s = stream_arg(*model, info, "lossAndGrad");
    HeldBatch hb;
    DWC_ARG_CHECK(info.Length() > 1, "Model.lossAndGrad: missing argument 'batch'");
    read_batch(info[1], *model, hb);
    const float *q2 = nullptr, *t2 = nullptr;
    if (info.Length() > 2 && info[2].IsObject()) {
      Napi::Object po = info[2].As<Napi::Object>();
      const int64_t n = int64_t(hb.b.B) * s->dim();
      q2 = typed_field<float>(po, "query", napi_float32_array, n, "[B, D]", hb);
      t2 = typed_field<float>(po, "target", napi_float32_array, n, "[B, D]", hb);
      DWC_ARG_CHECK(q2 && t2, "Model.lossAndGrad: 'partner' needs both 'query' and 'target'");
    }
    uint64_t rs = 0;
    if (info.Length() > 3 && info[3].IsNumber()) rs = static_cast<uint64_t>(info[3].As<Napi::Number>().Int64Value());
    StreamRecord rec;
    std::lock_guard<std::mutex> lock(compute_mutex());
    model->aw_reset();
    if (s == model->global.get())
      model->global_loss_and_grad(hb.b, q2, t2, Rng{model->options.seed, rs}, rec);
    else
      model->loss_and_grad(*s, hb.b, q2, t2, Rng{model->options.seed, rs}, rec);
    r = record_object(env, rec);
  });
  return r.IsEmpty() ? env.Undefined() : r;
}

// embed(batch, 'query' | 'target') -> Promise<{global: Float32Array [B,D], local?, globalWeight?, localWeight?}>
Napi::Value ModelObject::Embed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto hb = std::make_unique<HeldBatch>();
  bool queries = true;
  if (!guarded(env, [&] {
        check_idle("embed");
        DWC_ARG_CHECK(info.Length() > 0, "Model.embed: missing argument 'batch'");
        read_batch(info[0], *model, *hb);
        DWC_ARG_CHECK(info.Length() > 1 && info[1].IsString(), "Model.embed: argument 'kind' must be 'query' or 'target'");
        std::string k = info[1].As<Napi::String>();
        DWC_ARG_CHECK(k == "query" || k == "target", "Model.embed: argument 'kind' must be 'query' or 'target', got '" << k << "'");
        queries = k == "query";
      }))
    return env.Undefined();
  Model* m = model.get();
  const Batch* b = &hb->b;
  auto outs = std::make_shared<std::vector<StreamOut>>();
  return queue_model_call(
      env, busy, "Model.embed", info.This().As<Napi::Object>(), std::shared_ptr<HeldBatch>(std::move(hb)), [m, b, outs, queries] { m->embed(*b, queries, *outs); },
      [m, b, outs, queries](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        auto ss = m->streams();
        for (size_t i = 0; i < outs->size(); ++i) {
          const StreamOut& so = (*outs)[i];
          const size_t n = static_cast<size_t>(b->B) * ss[i]->dim();
          const std::string nm = ss[i]->name();
          o.Set(nm, f32_download(e, m->backend(), queries ? so.query : so.target, n));
          if (queries && so.weight) o.Set(nm + "Weight", f32_download(e, m->backend(), so.weight, static_cast<size_t>(b->B)));
        }
        return o;
      });
}

// stats() -> {iteration, arenaGrows, arenaBytes}
Napi::Value ModelObject::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("iteration", Napi::Number::New(env, static_cast<double>(model->iteration)));
  o.Set("arenaGrows", Napi::Number::New(env, model->arena_grows()));
  o.Set("arenaBytes", Napi::Number::New(env, static_cast<double>(model->arena_bytes())));
  o.Set("hasLocal", Napi::Boolean::New(env, model->local != nullptr));
  o.Set("hasGlobal", Napi::Boolean::New(env, model->global != nullptr));
  o.Set("hasTrunk", Napi::Boolean::New(env, model->trunk != nullptr));
  o.Set("hasEncoder", Napi::Boolean::New(env, model->encoder != nullptr));
  o.Set("hasClipEncoder", Napi::Boolean::New(env, model->clip_encoder != nullptr));
  return o;
}

// trunkFeatures({B, images, Hi, Wi}) -> Promise<{fmap: Float32Array [B,C,H,W], C, H, W}>:
// eval-mode local-trunk maps (frozen-trunk cache, issue 5 item 4).
Napi::Value ModelObject::TrunkFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto hb = std::make_unique<HeldBatch>();
  if (!guarded(env, [&] {
        check_idle("trunkFeatures");
        DWC_ARG_CHECK(model->trunk, "Model.trunkFeatures: this model has no local trunk (dimension 'trunk')");
        DWC_ARG_CHECK(info.Length() > 0, "Model.trunkFeatures: missing argument 'batch'");
        read_batch(info[0], *model, *hb);
        DWC_ARG_CHECK(hb->b.images, "Model.trunkFeatures: missing 'images' [B, 3, Hi, Wi]");
      }))
    return env.Undefined();
  Model* m = model.get();
  const Batch* b = &hb->b;
  auto res = std::make_shared<std::tuple<const float*, int, int>>(nullptr, 0, 0);
  return queue_model_call(
      env, busy, "Model.trunkFeatures", info.This().As<Napi::Object>(), std::shared_ptr<HeldBatch>(std::move(hb)),
      [m, b, res] {
        int Ho = 0, Wo = 0;
        const float* y = m->trunk_features(b->images, b->B, b->Hi, b->Wi, &Ho, &Wo);
        *res = {y, Ho, Wo};
      },
      [m, b, res](Napi::Env e) -> Napi::Value {
        const auto [y, Ho, Wo] = *res;
        const int C = m->trunk->out_channels();
        Napi::Object o = Napi::Object::New(e);
        o.Set("fmap", f32_download(e, m->backend(), y, static_cast<size_t>(b->B) * C * Ho * Wo));
        o.Set("C", C);
        o.Set("H", Ho);
        o.Set("W", Wo);
        return o;
      });
}

// awTargets(batch with query and target inputs) -> Promise<Float32Array [B]>: eval-mode w* of
// the adaptive weighting (PL4CIR-SPEC.md §3), for the report's w-against-w* plot.
Napi::Value ModelObject::AwTargets(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto hb = std::make_unique<HeldBatch>();
  if (!guarded(env, [&] {
        check_idle("awTargets");
        DWC_ARG_CHECK(info.Length() > 0, "Model.awTargets: missing argument 'batch'");
        read_batch(info[0], *model, *hb);
      }))
    return env.Undefined();
  Model* m = model.get();
  const Batch* b = &hb->b;
  auto res = std::make_shared<std::vector<float>>(static_cast<size_t>(b->B));
  return queue_model_call(
      env, busy, "Model.awTargets", info.This().As<Napi::Object>(), std::shared_ptr<HeldBatch>(std::move(hb)), [m, b, res] { m->aw_targets(*b, res->data()); },
      [res](Napi::Env e) -> Napi::Value { return f32_copy(e, res->data(), res->size()); });
}

// setIteration(n): iterations done (dropout masks derive from it; restored with a checkpoint)
Napi::Value ModelObject::SetIteration(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    check_idle("setIteration");
    double d = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    DWC_ARG_CHECK(d >= 0 && d == std::floor(d), "Model.setIteration: argument 'iteration' must be a non-negative integer");
    model->iteration = static_cast<int64_t>(d);
  });
  return env.Undefined();
}

// setLearningRate(lr): Adam's step size from the next trainStep on (both streams; schedules)
Napi::Value ModelObject::SetLearningRate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    check_idle("setLearningRate");
    const double d = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    DWC_ARG_CHECK(std::isfinite(d) && d >= 0, "Model.setLearningRate: argument 'lr' must be a finite non-negative number");
    model->options.lr = static_cast<float>(d);
  });
  return env.Undefined();
}

}  // namespace

DWC_ADDON_MODULE("model", [](Napi::Env env, Napi::Object exports) { exports.Set("Model", ModelObject::Init(env)); });

}  // namespace dwc

