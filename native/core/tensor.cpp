#include "tensor.h"

#include "../backend/backend.h"

#include <cstring>
#include <sstream>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#endif

namespace dwc {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

static void* aligned_zeroed(size_t bytes) {
  size_t rounded = ((bytes + 63) / 64) * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  DWC_CHECK(p != nullptr, Internal, "out of memory allocating " << bytes << " bytes");
  std::memset(p, 0, rounded);
  return p;
}

Storage::Storage(size_t b) : data(aligned_zeroed(b)), bytes(b) {}
Storage::~Storage() { std::free(data); }
void Storage::release() {
  std::free(data);
  data = nullptr;
  bytes = 0;
  released = true;
}

Tensor Tensor::empty(DType dtype, const std::vector<int64_t>& shape) {
  for (auto s : shape) DWC_ARG_CHECK(s >= 0, "negative dimension in shape " << shape_str(shape));
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.strides.assign(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) t.strides[i] = t.strides[i + 1] * shape[i + 1];
  t.storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
  return t;
}

bool Tensor::contiguous() const {
  int64_t expect = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

// Large arena blocks come straight from the kernel (mmap) where there is one: zero pages, no
// memset, untouched pages not resident, and a freed block goes back to the OS. From malloc, the
// warm-up's side blocks (up to 32 MiB each, under glibc's adaptive mmap threshold) stayed in the
// heap after reset() freed them, on top of the grown arena: +670 MiB resident in the ViT-B/32
// fine-tuning step (docs/CLIP.md "Speed").
// A block of `bytes`, zeroed, 64-byte aligned; the 64 bytes before it record how it was made
// (the mapping's size, or 0 for malloc). Blocks of 1 MiB or more come from mmap (where there is
// one); smaller ones from malloc (a step may make thousands of them while warming up).
static constexpr size_t kMapMin = size_t(1) << 20;
void* block_alloc(size_t bytes) {
  const size_t total = bytes + 64;
#if defined(__unix__) || defined(__APPLE__)
  if (bytes >= kMapMin) {
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    DWC_CHECK(p != MAP_FAILED, Internal, "out of memory allocating " << bytes << " bytes for the activation arena");
    *static_cast<size_t*>(p) = total;
    return static_cast<char*>(p) + 64;
  }
#endif
  void* p = aligned_zeroed(total);
  *static_cast<size_t*>(p) = 0;
  return static_cast<char*>(p) + 64;
}
void block_free(void* q) {
  if (!q) return;
  void* p = static_cast<char*>(q) - 64;
  const size_t mapped = *static_cast<size_t*>(p);
#if defined(__unix__) || defined(__APPLE__)
  if (mapped) {
    munmap(p, mapped);
    return;
  }
#endif
  std::free(p);
}

Arena::~Arena() {
  drop(base_);
  for (void* p : overflow_) drop(p);
}

void Arena::set_backend(backend::Backend* be) {
  DWC_CHECK(base_ == nullptr && overflow_.empty(), Internal, "arena: set_backend() after an allocation");
  be_ = be;
}

void* Arena::grab(size_t bytes, bool zero) {
  if (!be_) return block_alloc(bytes);  // zeroed pages
  void* p = be_->alloc_bytes(bytes);
  if (zero) be_->fill(static_cast<float*>(p), 0.f, static_cast<int64_t>(bytes / sizeof(float)));
  return p;
}

void Arena::drop(void* p) {
  if (!p) return;
  if (be_) be_->free_bytes(p);
  else block_free(p);
}

void Arena::reserve(size_t bytes) {
  if (bytes <= cap_) return;
  DWC_CHECK(used_ == 0, Internal, "arena reserve() during a step");
  drop(base_);
  base_ = nullptr;
  cap_ = 0;
  base_ = grab(bytes, false);
  cap_ = bytes;
  ++grows_;
}

float* Arena::alloc(int64_t nfloats, bool zero) {
  size_t bytes = ((static_cast<size_t>(nfloats) * 4 + 63) / 64) * 64;
  step_total_ += bytes;
  if (step_total_ > high_) high_ = step_total_;
  if (used_ + bytes <= cap_) {
    float* p = reinterpret_cast<float*>(static_cast<char*>(base_) + used_);
    used_ += bytes;
    if (zero) {
      if (be_) be_->fill(p, 0.f, static_cast<int64_t>(bytes / sizeof(float)));
      else std::memset(p, 0, bytes);
    }
    return p;
  }
  // Out of room: serve from a side block now, grow to the high-water mark at reset().
  void* p = grab(bytes, zero);
  overflow_.push_back(p);
  return static_cast<float*>(p);
}

void Arena::reset() {
  for (void* p : overflow_) drop(p);
  bool grow = !overflow_.empty();
  overflow_.clear();
  used_ = 0;
  step_total_ = 0;
  if (grow) reserve(high_ + high_ / 8);
}

}  // namespace dwc
