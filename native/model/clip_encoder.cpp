// The unfrozen CLIP encoder of stage 3 (docs/MODEL.md §16): see clip_encoder.h.
#include "clip_encoder.h"

#include <cmath>
#include <cstring>

namespace dwc {

ClipEncoder::ClipEncoder(const ClipArch& arch, int vocab, int pieces, backend::Backend& be) : V_(vocab), K_(pieces) {
  DWC_ARG_CHECK(vocab > 0, "clip encoder: dimension 'vocab' must be a positive integer, got " << vocab);
  DWC_ARG_CHECK(pieces >= 2 && pieces <= 64, "clip encoder: dimension 'clipPieces' (CLIP pieces per word) must be an integer in [2, 64], got " << pieces);
  clip = std::make_unique<ClipModel>(arch, be);
  maps.be = &be;
  arena_.set_backend(&be);
  // OpenAI names under the global stream's prefix (the towers address tensors by offset)
  for (ParamSpec& s : clip->params.specs) s.name = kPrefix + s.name;
  o_map_ = maps.add(std::string(kPrefix) + "token_map", {int64_t(vocab) + 1, pieces}, false);
  maps.finalize();
  // default table: no pieces; SOT, EOT of OpenAI's vocabulary layout (the highest two ids)
  std::vector<float> m(static_cast<size_t>((int64_t(vocab) + 1) * pieces), -1.f);
  m[int64_t(vocab) * pieces] = float(arch.vocab_size - 2);
  if (pieces > 1) m[int64_t(vocab) * pieces + 1] = float(arch.vocab_size - 1);
  maps.write(maps.params, o_map_, m.data(), static_cast<int64_t>(m.size()));
}

void ClipEncoder::reset() {
  arena_.reset();
  iB_ = 0;
  iref_ = itgt_ = false;
}

const float* ClipEncoder::pixels(const float* ref, const float* tgt, int B, int Hi, int Wi) {
  const int R = clip->arch.resolution;
  DWC_ARG_CHECK(Hi == Wi, "clip encoder: images must be square, got " << Hi << "x" << Wi);
  const int n = (ref ? 1 : 0) + (tgt ? 1 : 0);
  const int64_t per_in = int64_t(3) * Hi * Wi, per = int64_t(3) * R * R;
  if (n == 1 && Hi == R) return ref ? ref : tgt;
  float* px = arena_.alloc(n * B * per, false);
  int k = 0;
  for (const float* x : {ref, tgt}) {
    if (!x) continue;
    if (Hi == R) clip->backend().copy(px + k * B * per, x, sizeof(float) * B * per_in);
    else clip->backend().resize_bilinear(x, px + k * B * per, B, Hi, R);
    ++k;
  }
  return px;
}

void ClipEncoder::forward_images(const float* ref, const float* tgt, int B, int Hi, int Wi, bool save, const float** e_ref, const float** e_tgt) {
  *e_ref = *e_tgt = nullptr;
  if (!ref && !tgt) return;
  const int n = (ref ? 1 : 0) + (tgt ? 1 : 0);
  const float* px = pixels(ref, tgt, B, Hi, Wi);
  // one forward over [ref; tgt] (eval-mode BN: ClipAdam::bn_train false)
  const float* e = clip->image->forward(clip->params, arena_, px, n * B, false, save);
  const int64_t BE = int64_t(B) * dim();
  if (ref) *e_ref = e;
  if (tgt) *e_tgt = ref ? e + BE : e;
  if (save) {
    iB_ = B;
    iref_ = ref != nullptr;
    itgt_ = tgt != nullptr;
  }
}

void ClipEncoder::clip_ids(const int32_t* tokens, const int32_t* lengths, int B, int L, std::vector<int32_t>& out) const {
  const int T = clip->arch.context_length;
  out.assign(size_t(B) * T, 0);
  if (map_host_.empty() || map_version_ != maps.version) {  // setTensor / a checkpoint changed it
    map_host_.resize(static_cast<size_t>((int64_t(V_) + 1) * K_));
    maps.read(maps.params, o_map_, map_host_.data(), static_cast<int64_t>(map_host_.size()));
    map_version_ = maps.version;
  }
  const float* m = map_host_.data();
  const int32_t sot = int32_t(m[int64_t(V_) * K_]), eot = int32_t(K_ > 1 ? m[int64_t(V_) * K_ + 1] : clip->arch.vocab_size - 1);
  for (int b = 0; b < B; ++b) {
    int32_t* r = out.data() + int64_t(b) * T;
    int t = 0;
    r[t++] = sot;
    const int n = lengths ? lengths[b] : L;
    for (int i = 0; i < n && t < T - 1; ++i) {
      const int32_t w = tokens[int64_t(b) * L + i];
      DWC_ARG_CHECK(w >= 0 && w < V_, "clip encoder: token id " << w << " outside the vocabulary [0, " << V_ << ")");
      for (int k = 0; k < K_ && t < T - 1; ++k) {
        const float id = m[int64_t(w) * K_ + k];
        if (id < 0) break;
        r[t++] = int32_t(id);
      }
    }
    r[t < T ? t : T - 1] = eot;
  }
}

const float* ClipEncoder::forward_text(const int32_t* tokens, const int32_t* lengths, int B, int L, bool save) {
  DWC_ARG_CHECK(tokens, "batch: missing 'tokens' (the global stream's CLIP text tower needs them)");
  clip_ids(tokens, lengths, B, L, ids_);
  return clip->text.forward(clip->params, arena_, ids_.data(), B, save);
}

void ClipEncoder::backward_images(const float* d_ref, const float* d_tgt) {
  DWC_CHECK(iB_ > 0, Internal, "clip encoder: backward_images without a saved forward");
  const int64_t BE = int64_t(iB_) * dim();
  const int n = (iref_ ? 1 : 0) + (itgt_ ? 1 : 0);
  float* d = arena_.alloc(n * BE);  // zeroed: a missing gradient is zero
  if (iref_ && d_ref) clip->backend().copy(d, d_ref, sizeof(float) * BE);
  if (itgt_ && d_tgt) clip->backend().copy(d + (iref_ ? BE : 0), d_tgt, sizeof(float) * BE);
  clip->image->backward(clip->params, arena_, d);
  touch_tower(true);
}

// Marks the image tower's (visual.*) or the text tower's tensors as having a gradient (spec §10:
// Adam touches those only; logit_scale, unused by DWC, never).
void ClipEncoder::touch_tower(bool image) {
  const std::string vis = std::string(kPrefix) + "visual.", ls = std::string(kPrefix) + "logit_scale";
  for (const ParamSpec& s : clip->params.specs) {
    if (!s.trainable || s.name == ls) continue;
    if ((s.name.compare(0, vis.size(), vis) == 0) == image) clip->params.touch(s.offset);
  }
}

void ClipEncoder::backward_text(const float* de) {
  clip->text.backward(clip->params, arena_, de);
  touch_tower(false);
}

}  // namespace dwc
