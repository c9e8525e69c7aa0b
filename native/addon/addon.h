// Helpers shared by the binding files. Each binding file registers what it exports with
// DWC_ADDON_MODULE so that addon.cpp never changes when a new family is added.
#pragma once
#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "../core/errors.h"
#include "tensor_object.h"

namespace dwc {

using AddonInit = std::function<void(Napi::Env, Napi::Object)>;
struct AddonModule {
  AddonModule(const char* name, AddonInit init);
};

// Runs f; converts dwc::Error / std::exception into a pending JS exception. Returns false on error.
template <typename F>
bool guarded(Napi::Env env, F&& f) {
  try {
    f();
    return true;
  } catch (const Error& e) {
    throw_js(env, error_code_name(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    throw_js(env, "DWC_INTERNAL", "out of memory");
  } catch (const std::exception& e) {
    throw_js(env, "DWC_INTERNAL", e.what());
  }
  return false;
}

using AsyncWork = std::function<void()>;
using AsyncDone = std::function<Napi::Value(Napi::Env)>;

// The async call of a model object (Model, ClipModel): claims `busy` (already set → a DWC_BUSY
// error naming `method`, e.g. "Model.embed"), runs `work` off the JS thread under the compute
// mutex, then `done` on the JS thread builds the promise's value; `busy` is cleared either way.
// `self` and `keep` (held JS arguments, a read batch) live until the promise settles.
Napi::Value queue_model_call(Napi::Env env, std::atomic<bool>& busy, const std::string& method, Napi::Object self, std::shared_ptr<void> keep,
                             AsyncWork work, AsyncDone done);

// A CLIP architecture object {image, embedDim, visionWidth, ...} as `new ClipModel(arch)` takes it
// (clip_binding.cpp); the DWC model's dimension 'clip' (encoder "clip") reads the same.
struct ClipArch;
ClipArch clip_arch_from_js(const Napi::Object& o);

}  // namespace dwc

#define DWC_ADDON_CAT2(a, b) a##b
#define DWC_ADDON_CAT(a, b) DWC_ADDON_CAT2(a, b)
#define DWC_ADDON_MODULE(name, fn) static ::dwc::AddonModule DWC_ADDON_CAT(dwc_addon_module_, __LINE__)(name, fn)
