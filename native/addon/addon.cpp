// Entry point of the N-API addon: version/info, the op dispatcher (sync and async), and the
// modules that other binding files register (model, checkpoints, ...). No math here.
#include "addon.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>

#include "../backend/backend.h"
#include "../core/blas.h"
#include "../core/cpu_features.h"
#include "../kernels/conv.h"
#include "../kernels/conv_dnnl.h"
#include "../kernels/gemm.h"
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

namespace {
// See queue_model_call (addon.h).
class ModelCallWorker : public Napi::AsyncWorker {
 public:
  ModelCallWorker(Napi::Env env, std::atomic<bool>& busy, Napi::Object self, std::shared_ptr<void> keep, AsyncWork work, AsyncDone done)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        busy_(busy),
        self_(Napi::Persistent(self)),
        keep_(std::move(keep)),
        work_(std::move(work)),
        done_(std::move(done)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      run_on_compute_thread([this] {
        std::lock_guard<std::mutex> lock(compute_mutex());
        work_();
      });
    } catch (const Error& e) {
      code_ = error_code_name(e.code());
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      SetError("out of memory");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    busy_ = false;
    Napi::Env env = Env();
    Napi::Value r;
    if (!guarded(env, [&] { r = done_(env); })) {
      deferred_.Reject(env.GetAndClearPendingException().Value());
      return;
    }
    deferred_.Resolve(r);
  }
  void OnError(const Napi::Error& e) override {
    busy_ = false;
    deferred_.Reject(make_js_error(Env(), code_.c_str(), e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::atomic<bool>& busy_;
  Napi::ObjectReference self_;
  std::shared_ptr<void> keep_;
  AsyncWork work_;
  AsyncDone done_;
  std::string code_ = "DWC_INTERNAL";
};
}  // namespace

Napi::Value queue_model_call(Napi::Env env, std::atomic<bool>& busy, const std::string& method, Napi::Object self, std::shared_ptr<void> keep,
                             AsyncWork work, AsyncDone done) {
  bool expected = false;
  if (!busy.compare_exchange_strong(expected, true)) {
    throw_js(env, "DWC_BUSY", method + ": the model is in use by a running async call (await it first)");
    return env.Undefined();
  }
  auto* w = new ModelCallWorker(env, busy, self, std::move(keep), std::move(work), std::move(done));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
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
      run_on_compute_thread([this] {
        std::lock_guard<std::mutex> lock(compute_mutex());
        run_op(name_, ctx_);
      });
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
  // issue 12 item 2: the ISA the kernels run next to what the CPU can do
  o.Set("gemm", gemm_impl_name(gemm_impl()));
  o.Set("conv", cpu::conv_impl_name(cpu::conv_impl()));
  o.Set("onednn", have_dnnl() ? Napi::Value(Napi::String::New(env, dnnl_version())) : env.Null());
  o.Set("isa", kernel_isa());
  // why this build has the backend it has (a CBLAS build is either chosen or a fallback)
#if defined(DWC_WITH_DNNL)
  o.Set("backendBuild", "onednn");
#elif defined(DWC_BACKEND_CBLAS_CHOSEN)
  o.Set("backendBuild", "cblas (chosen: DWC_BACKEND=cblas)");
#else
  o.Set("backendBuild", "cblas (fallback: oneDNN not found at build time)");
#endif
  {
    const CpuFeatures& f = cpu_features();
    Napi::Object c = Napi::Object::New(env);
    c.Set("vendor", f.vendor);
    c.Set("brand", f.brand);
    c.Set("features", cpu_feature_list());
    c.Set("avx2", f.avx2);
    c.Set("avx512", f.avx512f);
    c.Set("avx512_bf16", f.avx512_bf16);
    c.Set("amx", f.amx_bf16);
    c.Set("masked", f.masked);  // features the CPU has that DWC_CPU_MASK hides (cpu_features.h)
    o.Set("cpu", c);
  }
  {
    Napi::Object p = Napi::Object::New(env);
    const std::string why = precision_unsupported_reason("bf16");
    p.Set("bf16", why.empty());
    p.Set("bf16Reason", why.empty() ? env.Null() : Napi::Value(Napi::String::New(env, why)));
    o.Set("precision", p);
  }
  {
    Napi::Array w = Napi::Array::New(env);
    const std::string cw = blas_core_warning();
    if (!cw.empty()) w.Set(0u, cw);
    o.Set("blasWarnings", w);
  }
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

// setKernels({gemm?: 'onednn'|'cblas', conv?: 'auto'|'onednn'|'im2col', epilogue?: 'fused'|'separate',
// weightCache?: 'on'|'off', bwdWeights?: 'onednn'|'gemm', precision?: 'fp32'|'bf16', bf16Gemm?: 'amx'|'onednn'}) -> the settings now. Selects the implementation behind dwc::sgemm, the
// convolutions and the fused-epilogue Linear (gemm.h linear_forward_fused), and whether the trunks
// keep their blocked weight copies between calls (conv_dnnl.h BlockedWeights), how the blocked
// trunk's small wide maps get their weight gradient (conv_dnnl.h gemm_backward_weights) (benches side by side, tests),
// and the precision of the GEMMs and convolutions (blas.h Precision; 'bf16' where unsupported throws the reason) and
// the kernel of the bf16 GEMMs (blas.h Bf16GemmKernel; 'amx' without AMX throws the reason).
static Napi::Value SetKernels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!guarded(env, [&] {
        if (info.Length() < 1 || info[0].IsUndefined()) return;
        DWC_ARG_CHECK(info[0].IsObject(), "setKernels: argument must be an object {gemm?, conv?, epilogue?, weightCache?, bwdWeights?, precision?, bf16Gemm?}");
        Napi::Object o = info[0].As<Napi::Object>();
        Napi::Array keys = o.GetPropertyNames();
        for (uint32_t i = 0; i < keys.Length(); ++i) {
          std::string k = keys.Get(i).As<Napi::String>();
          DWC_ARG_CHECK(k == "gemm" || k == "conv" || k == "epilogue" || k == "weightCache" || k == "bwdWeights" || k == "precision" || k == "bf16Gemm",
                        "setKernels: unknown option '" << k << "' (expected gemm, conv, epilogue, weightCache, bwdWeights, precision, bf16Gemm)");
          DWC_ARG_CHECK(o.Get(k).IsString(), "setKernels: option '" << k << "' must be a string");
        }
        std::string prec;
        if (o.Has("precision")) {
          prec = o.Get("precision").As<Napi::String>().Utf8Value();
          DWC_ARG_CHECK(prec == "fp32" || prec == "bf16", "setKernels: option 'precision' must be 'fp32' or 'bf16', got '" << prec << "'");
          if (prec == "bf16") {
            const std::string why = precision_unsupported_reason("bf16");
            DWC_ARG_CHECK(why.empty(), "setKernels: precision 'bf16' cannot run here: " << why);
          }
        }
        std::lock_guard<std::mutex> lock(compute_mutex());
        // fp32 before a gemm change (the CBLAS backend is fp32 only), bf16 after it
        if (prec == "fp32") set_precision(Precision::Fp32);
        if (o.Has("gemm")) {
          std::string g = o.Get("gemm").As<Napi::String>();
          DWC_ARG_CHECK(g == "onednn" || g == "cblas", "setKernels: option 'gemm' must be 'onednn' or 'cblas', got '" << g << "'");
          set_gemm_impl(g == "onednn" ? GemmImpl::Dnnl : GemmImpl::Cblas);
        }
        if (o.Has("conv")) {
          std::string c = o.Get("conv").As<Napi::String>();
          DWC_ARG_CHECK(c == "auto" || c == "onednn" || c == "im2col",
                        "setKernels: option 'conv' must be 'auto', 'onednn' or 'im2col', got '" << c << "'");
          cpu::set_conv_impl(c == "onednn" ? cpu::ConvImpl::Dnnl : c == "im2col" ? cpu::ConvImpl::Im2col : cpu::ConvImpl::Auto);
        }
        if (o.Has("epilogue")) {
          std::string e = o.Get("epilogue").As<Napi::String>();
          DWC_ARG_CHECK(e == "fused" || e == "separate", "setKernels: option 'epilogue' must be 'fused' or 'separate', got '" << e << "'");
          cpu::set_fused_epilogues(e == "fused");
        }
        if (o.Has("weightCache")) {
          std::string w = o.Get("weightCache").As<Napi::String>();
          DWC_ARG_CHECK(w == "on" || w == "off", "setKernels: option 'weightCache' must be 'on' or 'off', got '" << w << "'");
          cpu::set_weight_cache(w == "on");
        }
        if (o.Has("bwdWeights")) {
          std::string w = o.Get("bwdWeights").As<Napi::String>();
          DWC_ARG_CHECK(w == "onednn" || w == "gemm", "setKernels: option 'bwdWeights' must be 'onednn' or 'gemm', got '" << w << "'");
          cpu::set_gemm_backward_weights(w == "gemm");
        }
        if (o.Has("bf16Gemm")) {
          std::string g = o.Get("bf16Gemm").As<Napi::String>();
          DWC_ARG_CHECK(g == "amx" || g == "onednn", "setKernels: option 'bf16Gemm' must be 'amx' or 'onednn', got '" << g << "'");
          set_bf16_gemm_kernel(g == "amx" ? Bf16GemmKernel::Amx : Bf16GemmKernel::Onednn);
        }
        if (prec == "bf16") set_precision(Precision::Bf16);
      }))
    return env.Undefined();
  Napi::Object r = Napi::Object::New(env);
  r.Set("gemm", gemm_impl_name(gemm_impl()));
  r.Set("conv", cpu::conv_impl_name(cpu::conv_impl()));
  r.Set("epilogue", cpu::fused_epilogues() ? "fused" : "separate");
  r.Set("weightCache", cpu::weight_cache() ? "on" : "off");
  r.Set("bwdWeights", cpu::gemm_backward_weights_on() ? "gemm" : "onednn");
  r.Set("precision", precision_name(precision()));
  r.Set("bf16Gemm", bf16_gemm_kernel_name(bf16_gemm_kernel()));
  return r;
}

// kernelStats() -> {primitivesCreated, convCacheEntries, matmulPrimitivesCreated, weightReorders, bf16Calls, bf16GemmPrimitives,
// bf16BwdWeights}: oneDNN primitives created so far (tests check that same-shape calls reuse the cache); bf16Calls:
// GEMMs and convolutions that ran with bf16 operands and the bf16 GEMM's primitives (blas.h Precision);
// bf16BwdWeights: 'gemm' or 'onednn', the route bf16 backward-weights takes now (conv_dnnl.h).
static Napi::Value KernelStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  r.Set("primitivesCreated", Napi::Number::New(env, static_cast<double>(cpu::dnnl_primitives_created())));
  r.Set("convCacheEntries", Napi::Number::New(env, static_cast<double>(cpu::dnnl_conv_cache_size())));
  r.Set("matmulPrimitivesCreated", Napi::Number::New(env, static_cast<double>(cpu::matmul_primitives_created())));
  r.Set("weightReorders", Napi::Number::New(env, static_cast<double>(cpu::dnnl_weight_reorders())));
  r.Set("bf16Calls", Napi::Number::New(env, static_cast<double>(bf16_calls())));
  r.Set("bf16GemmPrimitives", Napi::Number::New(env, static_cast<double>(bf16_gemm_primitives())));
  r.Set("bf16BwdWeights", cpu::bf16_backward_weights_by_gemm() ? "gemm" : "onednn");
  return r;
}

// precisionCheck(name) -> null when it can run here, else the reason (string).
static Napi::Value PrecisionCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    throw_js(env, "DWC_BAD_ARGUMENT", "precisionCheck: argument 'precision' must be a string");
    return env.Undefined();
  }
  const std::string why = precision_unsupported_reason(info[0].As<Napi::String>());
  return why.empty() ? env.Null() : Napi::Value(Napi::String::New(env, why));
}

// setDevicePrecision(p?: 'fp32'|'bf16'|'fp16') -> the precision of the CUDA backends' GEMMs (after
// setting it when given; backend::set_device_precision, docs/CUDA.md "Precision on the GPU").
static Napi::Value SetDevicePrecision(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() >= 1 && !info[0].IsUndefined()) {
    backend::GemmPrecision p{};
    if (!info[0].IsString() || !backend::parse_gemm_precision(info[0].As<Napi::String>().Utf8Value(), &p)) {
      throw_js(env, "DWC_BAD_ARGUMENT", "setDevicePrecision: argument 'precision' must be 'fp32', 'bf16' or 'fp16'");
      return env.Undefined();
    }
    backend::set_device_precision(p);
  }
  return Napi::String::New(env, backend::gemm_precision_name(backend::device_precision()));
}

// DWC_GEMM=onednn|cblas, DWC_CONV=auto|onednn|im2col, DWC_EPILOGUE=fused|separate, DWC_PRECISION=fp32|bf16 and DWC_BF16_GEMM=amx|onednn pick the
// implementations for a whole run
// (re-measuring the choice of docs/PERFORMANCE.md on another machine); a bad value is ignored with
// a one-line notice rather than aborting the load.
static void kernels_from_env() {
  auto pick = [](const char* var, auto apply) {
    const char* v = std::getenv(var);
    if (!v || !*v) return;
    try {
      apply(std::string(v));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dwc-native: ignoring %s=%s: %s\n", var, v, e.what());
    }
  };
  pick("DWC_GEMM", [](const std::string& g) {
    DWC_ARG_CHECK(g == "onednn" || g == "cblas", "expected onednn or cblas");
    set_gemm_impl(g == "onednn" ? GemmImpl::Dnnl : GemmImpl::Cblas);
  });
  pick("DWC_EPILOGUE", [](const std::string& e) {
    DWC_ARG_CHECK(e == "fused" || e == "separate", "expected fused or separate");
    cpu::set_fused_epilogues(e == "fused");
  });
  pick("DWC_BF16_GEMM", [](const std::string& g) {
    DWC_ARG_CHECK(g == "amx" || g == "onednn", "expected amx or onednn");
    set_bf16_gemm_kernel(g == "amx" ? Bf16GemmKernel::Amx : Bf16GemmKernel::Onednn);
  });
  pick("DWC_PRECISION", [](const std::string& p) {
    DWC_ARG_CHECK(p == "fp32" || p == "bf16", "expected fp32 or bf16");
    set_precision(p == "bf16" ? Precision::Bf16 : Precision::Fp32);
  });
  pick("DWC_CONV", [](const std::string& c) {
    DWC_ARG_CHECK(c == "auto" || c == "onednn" || c == "im2col", "expected auto, onednn or im2col");
    cpu::set_conv_impl(c == "onednn" ? cpu::ConvImpl::Dnnl : c == "im2col" ? cpu::ConvImpl::Im2col : cpu::ConvImpl::Auto);
  });
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  if (const std::string m = cpu_mask_error(); !m.empty()) std::fprintf(stderr, "dwc-native: %s\n", m.c_str());
  init_threads();
  kernels_from_env();
  exports.Set("Tensor", TensorObject::Init(env));
  exports.Set("runOp", Napi::Function::New(env, RunOp));
  exports.Set("runOpAsync", Napi::Function::New(env, RunOpAsync));
  exports.Set("listOps", Napi::Function::New(env, ListOps));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("setKernels", Napi::Function::New(env, SetKernels));
  exports.Set("kernelStats", Napi::Function::New(env, KernelStats));
  exports.Set("precisionCheck", Napi::Function::New(env, PrecisionCheck));
  exports.Set("setDevicePrecision", Napi::Function::New(env, SetDevicePrecision));
  for (auto& m : modules()) m.second(env, exports);
  return exports;
}

}  // namespace dwc

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return dwc::Init(env, exports); }
NODE_API_MODULE(dwc_native, InitAddon)
