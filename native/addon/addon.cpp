// Entry point of the N-API addon: version/info, the op dispatcher (sync and async), and the
// modules that other binding files register (model, checkpoints, ...). No math here.
#include "addon.h"

#include <map>
#include <vector>

#include "../backend/backend.h"
#include "../core/blas.h"
#include "../core/op.h"
#include "../core/threads.h"

#ifndef DWC_VERSION
#define DWC_VERSION "0.0.0"
#endif

namespace dwc {

static std::vector<std::pair<const char*, AddonInit>>& modules() {
  static std::vector<std::pair<const char*, AddonInit>> m;
  return m;
}
AddonModule::AddonModule(const char* name, AddonInit init) { modules().emplace_back(name, std::move(init)); }

// Reads {name: Tensor} and {name: number|boolean} into an OpCtx; names the bad argument.
static void read_op_args(const Napi::CallbackInfo& info, const std::string& op, OpCtx& ctx) {
  if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
    DWC_ARG_CHECK(info[1].IsObject(), op << ": 'inputs' must be an object of Tensors");
    Napi::Object ins = info[1].As<Napi::Object>();
    Napi::Array keys = ins.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      std::string k = keys.Get(i).As<Napi::String>();
      Napi::Value v = ins.Get(k);
      DWC_ARG_CHECK(v.IsObject() && v.As<Napi::Object>().InstanceOf(TensorObject::constructor->Value()),
                    op << ": argument '" << k << "' must be a Tensor");
      const Tensor& t = TensorObject::Unwrap(v.As<Napi::Object>())->tensor;
      DWC_CHECK(t.storage && !t.storage->released, Released, op << ": argument '" << k << "': tensor has been released");
      DWC_CHECK(!t.storage->busy, Busy, op << ": argument '" << k << "' is in use by a running async call");
      ctx.inputs[k] = t;
    }
  }
  if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) {
    DWC_ARG_CHECK(info[2].IsObject(), op << ": 'options' must be an object");
    Napi::Object at = info[2].As<Napi::Object>();
    Napi::Array keys = at.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      std::string k = keys.Get(i).As<Napi::String>();
      Napi::Value v = at.Get(k);
      if (v.IsBoolean()) ctx.attrs[k] = v.As<Napi::Boolean>().Value() ? 1.0 : 0.0;
      else if (v.IsNumber()) ctx.attrs[k] = v.As<Napi::Number>().DoubleValue();
      else DWC_ARG_CHECK(false, op << ": option '" << k << "' must be a number or boolean");
    }
  }
}

static Napi::Object wrap_outputs(Napi::Env env, OpCtx& ctx) {
  Napi::Object out = Napi::Object::New(env);
  for (auto& kv : ctx.outputs) out.Set(kv.first, TensorObject::Wrap(env, kv.second));
  return out;
}

static std::string op_name_arg(const Napi::CallbackInfo& info) {
  DWC_ARG_CHECK(info.Length() > 0 && info[0].IsString(), "runOp: argument 'name' must be a string");
  return info[0].As<Napi::String>();
}

// runOp(name, inputs, options) -> outputs
static Napi::Value RunOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OpCtx ctx;
  if (!guarded(env, [&] {
        std::string name = op_name_arg(info);
        read_op_args(info, name, ctx);
        std::lock_guard<std::mutex> lock(compute_mutex());
        run_op(name, ctx);
      }))
    return env.Undefined();
  return wrap_outputs(env, ctx);
}

// Holds the busy flags of every input for the duration of an async call.
class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, std::string name, OpCtx ctx)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), name_(std::move(name)), ctx_(std::move(ctx)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  bool acquire(std::string* who) {
    for (auto& kv : ctx_.inputs) {
      bool expected = false;
      if (!kv.second.storage->busy.compare_exchange_strong(expected, true)) {
        *who = kv.first;
        release_flags();
        return false;
      }
      held_.push_back(kv.second.storage);
    }
    return true;
  }
  void Execute() override {
    try {
      std::lock_guard<std::mutex> lock(compute_mutex());
      run_op(name_, ctx_);
    } catch (const Error& e) {
      code_ = error_code_name(e.code());
      SetError(e.what());
    } catch (const std::exception& e) {
      code_ = "DWC_INTERNAL";
      SetError(e.what());
    }
  }
  void OnOK() override {
    release_flags();
    deferred_.Resolve(wrap_outputs(Env(), ctx_));
  }
  void OnError(const Napi::Error& e) override {
    release_flags();
    deferred_.Reject(make_js_error(Env(), code_.c_str(), e.Message()).Value());
  }

 private:
  void release_flags() {
    for (auto& s : held_) s->busy = false;
    held_.clear();
  }
  Napi::Promise::Deferred deferred_;
  std::string name_;
  OpCtx ctx_;
  std::string code_ = "DWC_INTERNAL";
  std::vector<std::shared_ptr<Storage>> held_;
};

// runOpAsync(name, inputs, options) -> Promise<outputs>; inputs are marked busy meanwhile.
static Napi::Value RunOpAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OpCtx ctx;
  std::string name;
  if (!guarded(env, [&] {
        name = op_name_arg(info);
        DWC_ARG_CHECK(op_registry().count(name), "unknown op '" << name << "'");
        read_op_args(info, name, ctx);
      }))
    return env.Undefined();
  auto* w = new OpWorker(env, name, std::move(ctx));
  std::string who;
  if (!w->acquire(&who)) {
    delete w;
    throw_js(env, "DWC_BUSY", name + ": argument '" + who + "' is in use by a running async call");
    return env.Undefined();
  }
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

static Napi::Value ListOps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env);
  uint32_t i = 0;
  for (auto& kv : op_registry()) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", kv.first);
    o.Set("doc", kv.second.doc);
    a.Set(i++, o);
  }
  return a;
}

static Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", DWC_VERSION);
  Napi::Array backends = Napi::Array::New(env);
  backends.Set(0u, "cpu");
#ifdef DWC_WITH_CUDA
  backends.Set(1u, "cuda");
#endif
  o.Set("backends", backends);
  {  // CUDA: compiled in or not, devices, and one status line ("CUDA compiled, no device" here)
    const backend::CudaInfo ci = backend::cuda_info();
    o.Set("cudaStatus", ci.status);
    if (ci.compiled) {
      o.Set("cudaRuntime", ci.runtime);
      Napi::Array devs = Napi::Array::New(env);
      for (size_t i = 0; i < ci.devices.size(); ++i) {
        Napi::Object d = Napi::Object::New(env);
        d.Set("index", ci.devices[i].index);
        d.Set("name", ci.devices[i].name);
        d.Set("memoryBytes", static_cast<double>(ci.devices[i].memory_bytes));
        d.Set("computeCapability", std::to_string(ci.devices[i].cc_major) + "." + std::to_string(ci.devices[i].cc_minor));
        devs.Set(static_cast<uint32_t>(i), d);
      }
      o.Set("cudaDevices", devs);
    }
  }
  o.Set("blas", blas_name());
  o.Set("blasThreads", blas_num_threads());
  o.Set("threads", num_threads());
#ifdef _OPENMP
  o.Set("openmp", true);
#else
  o.Set("openmp", false);
#endif
  return o;
}

static Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    throw_js(env, "DWC_BAD_ARGUMENT", "setNumThreads: argument 'n' must be a number");
    return env.Undefined();
  }
  set_num_threads(info[0].As<Napi::Number>().Int32Value());
  return Napi::Number::New(env, num_threads());
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  init_threads();
  exports.Set("Tensor", TensorObject::Init(env));
  exports.Set("runOp", Napi::Function::New(env, RunOp));
  exports.Set("runOpAsync", Napi::Function::New(env, RunOpAsync));
  exports.Set("listOps", Napi::Function::New(env, ListOps));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  for (auto& m : modules()) m.second(env, exports);
  return exports;
}

}  // namespace dwc

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return dwc::Init(env, exports); }
NODE_API_MODULE(dwc_native, InitAddon)
