// dlopen of libcublas (see cublas_loader.h). Plain C++: compiled by the host compiler.
#include "cublas_loader.h"

#include <dlfcn.h>
#include <glob.h>
#include <sys/stat.h>

#include <cstdlib>
#include <mutex>
#include <sstream>

#include "../core/errors.h"

namespace dwc::cublas {

const char* status_name(Status s) {
  switch (s) {
    case STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED (no usable GPU or driver?)";
    case STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED (out of GPU memory)";
    case STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE (bad size, leading dimension or pointer)";
    case STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH (the GPU lacks a feature this call needs)";
    case STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_<unknown>";
}

namespace {

const char* const kSonames[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};

bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_file(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && !S_ISDIR(st.st_mode);
}

void add_dir(std::vector<std::string>& out, const std::string& dir) {
  if (dir.empty()) return;
  for (const char* so : kSonames) out.push_back(dir + "/" + so);
}

void add_glob(std::vector<std::string>& out, const std::string& pattern);
// <site-packages>/nvidia/cublas/lib (nvidia-cublas-cu12) and <site-packages>/nvidia/cu13/lib (the CUDA 13 wheels' layout).
void add_site(std::vector<std::string>& out, const std::string& site) {
  add_glob(out, site + "/nvidia/cublas/lib");
  add_glob(out, site + "/nvidia/cu1*/lib");
}

void add_glob(std::vector<std::string>& out, const std::string& pattern) {
  glob_t g{};
  if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) add_dir(out, g.gl_pathv[i]);
  globfree(&g);
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

struct Loaded {
  Api api{};
  std::string path;
  std::string error;
  bool ok = false;
};

template <class F>
bool sym(void* h, const char* name, F& fn, std::string& err) {
  dlerror();
  void* p = dlsym(h, name);
  if (!p) {
    const char* e = dlerror();
    err = std::string("symbol ") + name + " missing: " + (e ? e : "?");
    return false;
  }
  fn = reinterpret_cast<F>(p);
  return true;
}

Loaded load() {
  Loaded L;
  std::ostringstream tried;
  for (const std::string& c : candidates()) {
    const bool bare = c.find('/') == std::string::npos;
    if (!bare && !is_file(c)) continue;  // absent files are not worth a line each
    // libcublas needs libcublasLt from its own folder: load that first, globally.
    if (!bare) {
      const std::string dir = c.substr(0, c.rfind('/'));
      const std::string suffix = c.substr(c.rfind(".so"));
      dlopen((dir + "/libcublasLt" + suffix).c_str(), RTLD_NOW | RTLD_GLOBAL);
    }
    void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      tried << "\n  " << c << ": " << (e ? e : "dlopen failed");
      continue;
    }
    std::string err;
    Api a{};
    bool ok = sym(h, "cublasCreate_v2", a.Create, err) && sym(h, "cublasDestroy_v2", a.Destroy, err) &&
              sym(h, "cublasSetStream_v2", a.SetStream, err) && sym(h, "cublasSetMathMode", a.SetMathMode, err) &&
              sym(h, "cublasSgemm_v2", a.Sgemm, err) && sym(h, "cublasSgemmStridedBatched", a.SgemmStridedBatched, err) &&
              sym(h, "cublasGemmEx", a.GemmEx, err) && sym(h, "cublasGemmStridedBatchedEx", a.GemmStridedBatchedEx, err);
    if (!ok) {
      tried << "\n  " << c << ": loaded, but " << err;
      dlclose(h);
      continue;
    }
    L.api = a;
    L.path = c;
    L.ok = true;
    return L;
  }
  std::ostringstream msg;
  msg << "cuBLAS could not be loaded (the CUDA backend needs libcublas.so.12 or .13 at run time). Tried:" << tried.str()
      << "\n  (folders searched: $DWC_CUBLAS_PATH, $CUDA_HOME/lib64, $CUDA_PATH/lib64, /usr/local/cuda/lib64, the nvidia-cublas "
         "Python package's nvidia/cublas/lib under python site-packages, then the loader path)"
      << "\n  Fix: pip install nvidia-cublas (or nvidia-cublas-cu12) and set DWC_CUBLAS_PATH to its nvidia/cublas/lib folder, "
         "or install the toolkit's cuBLAS.";
  L.error = msg.str();
  return L;
}

const Loaded& loaded() {
  static std::once_flag once;
  static Loaded L;
  std::call_once(once, [] { L = load(); });
  return L;
}

}  // namespace

std::vector<std::string> candidates() {
  std::vector<std::string> out;
  const std::string p = env("DWC_CUBLAS_PATH");
  if (!p.empty()) {
    if (is_dir(p))
      add_dir(out, p);
    else
      out.push_back(p);
  }
  for (const char* v : {"CUDA_HOME", "CUDA_PATH"}) {
    const std::string d = env(v);
    if (!d.empty()) {
      add_dir(out, d + "/lib64");
      add_dir(out, d + "/lib");
    }
  }
  add_dir(out, "/usr/local/cuda/lib64");
  add_glob(out, "/usr/local/cuda-*/lib64");
  // nvidia-cublas wheels: <site-packages>/nvidia/cublas/lib
  for (const char* v : {"VIRTUAL_ENV", "CONDA_PREFIX"}) {
    const std::string d = env(v);
    if (!d.empty()) add_site(out, d + "/lib/python3*/site-packages");
  }
  const std::string pp = env("PYTHONPATH");
  for (size_t s = 0; s <= pp.size();) {
    size_t e = pp.find(':', s);
    if (e == std::string::npos) e = pp.size();
    if (e > s) add_site(out, pp.substr(s, e - s));
    s = e + 1;
  }
  const std::string home = env("HOME");
  if (!home.empty()) add_site(out, home + "/.local/lib/python3*/site-packages");
  for (const char* pre : {"/usr/local/lib", "/usr/lib", "/opt/conda/lib", "/opt/venv/lib", "/root/.local/lib"}) {
    add_site(out, std::string(pre) + "/python3*/site-packages");
    add_site(out, std::string(pre) + "/python3*/dist-packages");
  }
  add_site(out, "/usr/lib/python3/dist-packages");
  for (const char* so : kSonames) out.push_back(so);  // LD_LIBRARY_PATH, ldconfig
  return out;
}

const Api& api() {
  const Loaded& L = loaded();
  DWC_CHECK(L.ok, Cuda, L.error);
  return L.api;
}

bool available(std::string* where_or_error) {
  const Loaded& L = loaded();
  if (where_or_error) *where_or_error = L.ok ? L.path : L.error;
  return L.ok;
}

}  // namespace dwc::cublas
