// Tensor views (shape, strides) over float32 / int32 storage, and an owning tensor used at the
// N-API boundary. Kernels take raw pointers plus sizes (llm.c style); views describe buffers.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "errors.h"

namespace dwc {

enum class DType { F32, I32 };
inline const char* dtype_name(DType d) { return d == DType::F32 ? "float32" : "int32"; }
inline size_t dtype_size(DType) { return 4; }

std::string shape_str(const std::vector<int64_t>& shape);
int64_t shape_numel(const std::vector<int64_t>& shape);

// 64-byte aligned, zero-initialised heap block.
struct Storage {
  explicit Storage(size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;
  size_t bytes = 0;
  std::atomic<bool> busy{false};  // held by an async call
  bool released = false;          // memory freed by release()
  void release();
};

// A view: storage + offset + shape + strides (in elements).
struct Tensor {
  std::shared_ptr<Storage> storage;
  DType dtype = DType::F32;
  int64_t offset = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;

  static Tensor empty(DType dtype, const std::vector<int64_t>& shape);  // zeroed, contiguous
  int ndim() const { return static_cast<int>(shape.size()); }
  int64_t numel() const { return shape_numel(shape); }
  int64_t dim(int i) const { return shape[i < 0 ? i + ndim() : i]; }
  bool contiguous() const;
  float* f32() const { return static_cast<float*>(storage->data) + offset; }
  int32_t* i32() const { return static_cast<int32_t*>(storage->data) + offset; }
};

// Host memory blocks, 64-byte aligned and zeroed: 1 MiB or more straight from the kernel (mmap:
// zero pages, untouched pages not resident, a freed block goes back to the OS), smaller ones from
// malloc. The arenas' host blocks and the CPU backend's large blocks (tensor.cpp).
void* block_alloc(size_t bytes);
void block_free(void* p);

// Bump allocator for per-step activations: reset() at the start of a step, alloc() hands out
// 64-byte aligned zeroed blocks. If a step needs more than the capacity the arena grows once
// (warm-up); grow_count() lets tests and benchmarks prove no growth happens after warm-up.
namespace backend {
class Backend;
}

class Arena {
 public:
  Arena() = default;
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  void reserve(size_t bytes);
  float* alloc(int64_t nfloats, bool zero = true);
  int32_t* alloc_i32(int64_t n) { return reinterpret_cast<int32_t*>(alloc(n)); }
  void reset();
  size_t used() const { return used_; }
  size_t capacity() const { return cap_; }
  size_t high_water() const { return high_; }
  int grow_count() const { return grows_; }
  // Blocks from this backend's pool, zeroing with its fill (the model's arenas: backend memory);
  // null (the default) = host blocks. Set before the first allocation.
  void set_backend(backend::Backend* be);

 private:
  // blocks allocated while the current one was full; merged into one block at reset().
  std::vector<void*> overflow_;
  void* base_ = nullptr;
  size_t cap_ = 0, used_ = 0, high_ = 0, step_total_ = 0;
  int grows_ = 0;
  backend::Backend* be_ = nullptr;
  void* grab(size_t bytes, bool zero);  // a zeroed (zero) block from the backend or the host
  void drop(void* p);
};

}  // namespace dwc
