#include "tensor.h"

#include <cstring>
#include <sstream>

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

Arena::~Arena() {
  std::free(base_);
  for (void* p : overflow_) std::free(p);
}

void Arena::reserve(size_t bytes) {
  if (bytes <= cap_) return;
  DWC_CHECK(used_ == 0, Internal, "arena reserve() during a step");
  std::free(base_);
  base_ = aligned_zeroed(bytes);
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
    if (zero) std::memset(p, 0, bytes);
    return p;
  }
  // Out of room: serve from a side block now, grow to the high-water mark at reset().
  void* p = aligned_zeroed(bytes);
  overflow_.push_back(p);
  return static_cast<float*>(p);
}

void Arena::reset() {
  for (void* p : overflow_) std::free(p);
  bool grow = !overflow_.empty();
  overflow_.clear();
  used_ = 0;
  step_total_ = 0;
  if (grow) reserve(high_ + high_ / 8);
}

}  // namespace dwc
