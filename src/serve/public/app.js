// The search page: a reference image (file, drop, or a clicked result) + a modification text ->
// POST /search -> the top-k grid with scores and the query's w (image vs text share).
const $ = (id) => document.getElementById(id);
const form = $('query');
const fileInput = $('file');
const drop = $('drop');
const preview = $('ref-preview');
const status = $('status');
const results = $('results');
const weights = $('weights');

/** The current reference: { file } (an upload) or { path } (a gallery image). */
let reference = null;

function setReference(ref, src, label) {
  reference = ref;
  preview.src = src;
  preview.alt = `Reference image: ${label}`;
  preview.hidden = false;
  $('ref-caption').textContent = label;
  if (!ref.file) fileInput.value = ''; // the reference is now a gallery image, not the picked file
}

function useFile(file) {
  if (!file) return;
  setReference({ file }, URL.createObjectURL(file), file.name);
}

fileInput.addEventListener('change', () => useFile(fileInput.files[0]));
drop.addEventListener('click', () => fileInput.click());
drop.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' || e.key === ' ') {
    e.preventDefault();
    fileInput.click();
  }
});
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  useFile(e.dataTransfer.files[0]);
});

function showError(msg) {
  status.textContent = msg;
  status.classList.add('error');
}

function pct(x) {
  return `${Math.round(x * 100)}%`;
}

function showWeights(w) {
  const parts = [];
  for (const [name, v] of Object.entries(w ?? {})) {
    if (typeof v !== 'number') continue;
    parts.push(`<span>${name} stream: image ${pct(v)} / text ${pct(1 - v)} <span class="bar" aria-hidden="true"><span style="width:${pct(v)}"></span></span></span>`);
  }
  weights.innerHTML = parts.length ? `Query weight w (image vs text share): ${parts.join(' · ')}` : '';
}

async function search() {
  const text = $('text').value.trim();
  if (!reference) return showError('Pick or drop a reference image first.');
  if (!text) return showError('Type how the reference image should change.');
  const k = $('k').value || '12';
  let body;
  let headers = {};
  if (reference.file) {
    body = new FormData();
    body.append('text', text);
    body.append('k', k);
    body.append('image', reference.file, reference.file.name);
  } else {
    body = JSON.stringify({ image: reference.path, text, k: Number(k) });
    headers = { 'content-type': 'application/json' };
  }
  status.classList.remove('error');
  status.textContent = 'Searching…';
  let res;
  try {
    res = await fetch('/search', { method: 'POST', body, headers });
  } catch (e) {
    return showError(`The server did not answer: ${e.message}`);
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) return showError(data.error?.message ?? `Search failed (HTTP ${res.status}).`);
  status.textContent = `${data.results.length} results for “${text}” in ${data.took_ms} ms.`;
  showWeights(data.w);
  results.replaceChildren(
    ...data.results.map((r) => {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'result';
      b.dataset.path = r.path;
      b.setAttribute('aria-label', `Result ${r.rank}: ${r.path}, score ${r.score.toFixed(3)}. Use as the next reference.`);
      const img = document.createElement('img');
      img.src = r.url;
      img.alt = `Result ${r.rank}: ${r.path}`;
      img.loading = 'lazy';
      const meta = document.createElement('span');
      meta.className = 'meta';
      meta.innerHTML = `<span>#${r.rank}</span><span>score ${r.score.toFixed(3)}</span>`;
      const path = document.createElement('span');
      path.className = 'path';
      path.textContent = r.path;
      b.append(img, meta, path);
      b.addEventListener('click', () => {
        setReference({ path: r.path }, r.url, r.path);
        search();
      });
      li.append(b);
      return li;
    }),
  );
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  search();
});

fetch('/healthz')
  .then((r) => r.json())
  .then((h) => ($('health').textContent = `${h.images} gallery images · ${h.ann ? 'ANN index' : 'exact search'}`))
  .catch(() => {});
