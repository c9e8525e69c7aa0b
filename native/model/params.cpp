// ParamBuffer: one contiguous params/grads/m/v allocation per stream (spec §9 names).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "model.h"

namespace dwc {

void BackendArray::resize(backend::Backend* be, size_t n) {
  if (be == be_ && n == n_) return;
  release();
  be_ = be;
  n_ = n;
  p_ = n ? static_cast<float*>(be->alloc_bytes(n * sizeof(float))) : nullptr;
}

void BackendArray::assign(backend::Backend* be, size_t n, float value) {
  resize(be, n);
  if (n) be_->fill(p_, value, static_cast<int64_t>(n));
}

void BackendArray::release() {
  if (p_) be_->free_bytes(p_);
  p_ = nullptr;
  n_ = 0;
}

void ParamBuffer::read(const BackendArray& buf, int64_t off, float* host, int64_t n) const {
  DWC_CHECK(off >= 0 && n >= 0 && static_cast<size_t>(off + n) <= buf.size(), Internal, "ParamBuffer::read out of range");
  if (n) be->download(host, buf.data() + off, static_cast<size_t>(n) * sizeof(float));
}

void ParamBuffer::write(BackendArray& buf, int64_t off, const float* host, int64_t n) {
  DWC_CHECK(off >= 0 && n >= 0 && static_cast<size_t>(off + n) <= buf.size(), Internal, "ParamBuffer::write out of range");
  if (n) be->upload(buf.data() + off, host, static_cast<size_t>(n) * sizeof(float));
  if (&buf == &params) changed();  // the weights' version (blocked weight copies, conv_dnnl.h)
}

void ParamBuffer::init_uniform(int64_t off, int64_t n, float lo, float hi, const Rng& rng) {
  std::vector<float> h(static_cast<size_t>(n));
  fill_uniform(h.data(), n, lo, hi, rng);
  write(params, off, h.data(), n);
}

void ParamBuffer::init_normal(int64_t off, int64_t n, float mean, float std, const Rng& rng) {
  std::vector<float> h(static_cast<size_t>(n));
  fill_normal(h.data(), n, mean, std, rng);
  write(params, off, h.data(), n);
}

void ParamBuffer::init_fill(int64_t off, int64_t n, float value) {
  DWC_CHECK(off >= 0 && n >= 0 && static_cast<size_t>(off + n) <= params.size(), Internal, "ParamBuffer::init_fill out of range");
  if (n) be->fill(params.data() + off, value, n);
  changed();
}

float ParamBuffer::scalar(int64_t off) const {
  float v = 0.f;
  read(params, off, &v, 1);
  return v;
}

int64_t ParamBuffer::add(const std::string& name, const std::vector<int64_t>& shape, bool trainable, bool is_counter) {
  DWC_CHECK(!finalized_, Internal, "ParamBuffer: add('" << name << "') after finalize()");
  DWC_CHECK(index_of(name) < 0, Internal, "ParamBuffer: parameter '" << name << "' declared twice");
  ParamSpec s;
  s.name = name;
  s.shape = shape;
  s.numel = shape_numel(shape);
  s.offset = total_;
  s.trainable = trainable && !is_counter;
  s.is_counter = is_counter;
  // Keep every tensor 16-float (64-byte) aligned inside the buffer.
  total_ += (s.numel + 15) / 16 * 16;
  specs.push_back(s);
  return s.offset;
}

void ParamBuffer::finalize() {
  if (finalized_) return;
  params.assign(be, static_cast<size_t>(total_), 0.f);
  grads.assign(be, static_cast<size_t>(total_), 0.f);
  m.assign(be, static_cast<size_t>(total_), 0.f);
  v.assign(be, static_cast<size_t>(total_), 0.f);
  touched.assign(specs.size(), false);
  finalized_ = true;
  changed();
}

void ParamBuffer::changed() {
  static std::atomic<uint64_t> next{0};
  version = ++next;
}

int ParamBuffer::index_of(const std::string& name) const {
  for (size_t i = 0; i < specs.size(); ++i)
    if (specs[i].name == name) return static_cast<int>(i);
  return -1;
}

const ParamSpec* ParamBuffer::find(const std::string& name) const {
  int i = index_of(name);
  return i < 0 ? nullptr : &specs[static_cast<size_t>(i)];
}

void ParamBuffer::zero_grad() {
  be->fill(grads.data(), 0.f, static_cast<int64_t>(grads.size()));
  std::fill(touched.begin(), touched.end(), false);
}

void ParamBuffer::touch(int64_t off) {
  // specs are sorted by offset (add() appends)
  auto it = std::lower_bound(specs.begin(), specs.end(), off, [](const ParamSpec& s, int64_t o) { return s.offset < o; });
  DWC_CHECK(it != specs.end() && it->offset == off, Internal, "ParamBuffer::touch: no parameter starts at offset " << off);
  touched[static_cast<size_t>(it - specs.begin())] = true;
}

}  // namespace dwc
