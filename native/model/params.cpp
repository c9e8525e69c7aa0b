// ParamBuffer: one contiguous params/grads/m/v allocation per stream (spec §9 names).
#include <algorithm>
#include <atomic>
#include <cstring>

#include "model.h"

namespace dwc {

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
  params.assign(static_cast<size_t>(total_), 0.f);
  grads.assign(static_cast<size_t>(total_), 0.f);
  m.assign(static_cast<size_t>(total_), 0.f);
  v.assign(static_cast<size_t>(total_), 0.f);
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
  std::memset(grads.data(), 0, grads.size() * sizeof(float));
  std::fill(touched.begin(), touched.end(), false);
}

void ParamBuffer::touch(int64_t off) {
  // specs are sorted by offset (add() appends)
  auto it = std::lower_bound(specs.begin(), specs.end(), off, [](const ParamSpec& s, int64_t o) { return s.offset < o; });
  DWC_CHECK(it != specs.end() && it->offset == off, Internal, "ParamBuffer::touch: no parameter starts at offset " << off);
  touched[static_cast<size_t>(it - specs.begin())] = true;
}

}  // namespace dwc
