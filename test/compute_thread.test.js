// One compute thread (docs/PERFORMANCE.md, "One compute thread"): async ops and model calls are
// handed from whichever libuv worker picked them up to one native thread. Many calls in flight at
// once all get their own results, errors thrown there reach the caller with their code, and the
// process keeps one OpenMP team: after many async calls, no more than `threads` native threads
// have done the work.
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { runOp, runOpAsync, tensor, addon } from '../lib/index.js';
import { makeRng } from './helpers/index.js';

const threadCpu = () => {
  const o = new Map();
  for (const t of readdirSync('/proc/self/task')) {
    const f = readFileSync(`/proc/self/task/${t}/stat`, 'utf8').split(') ')[1].split(' ');
    o.set(t, Number(f[11]) + Number(f[12]));
  }
  return o;
};

test('many async ops in flight at once: each gets its own result, equal to the synchronous op', async (t) => {
  const rng = makeRng(7);
  const jobs = Array.from({ length: 12 }, (_, i) => {
    const m = 40 + i, k = 64, n = 50;
    const A = Float32Array.from({ length: m * k }, () => rng.uniform() - 0.5);
    const B = Float32Array.from({ length: k * n }, () => rng.uniform() - 0.5);
    return { A, B, m, k, n };
  });
  const outs = await Promise.all(jobs.map((j) => runOpAsync('gemm', { A: tensor(j.A, [j.m, j.k]), B: tensor(j.B, [j.k, j.n]) })));
  jobs.forEach((j, i) => {
    const ref = runOp('gemm', { A: tensor(j.A, [j.m, j.k]), B: tensor(j.B, [j.k, j.n]) }).C.toArray();
    t.deepEqual(outs[i].C.shape, [j.m, j.n]);
    t.true(Buffer.from(outs[i].C.toArray().buffer).equals(Buffer.from(ref.buffer)), `job ${i}`);
  });
});

test('an error thrown on the compute thread rejects the call with its code and message', async (t) => {
  const e = await t.throwsAsync(runOpAsync('gemm', { A: tensor(new Float32Array(6), [2, 3]), B: tensor(new Float32Array(20), [4, 5]) }));
  t.regex(e.message, /gemm/);
  t.truthy(e.code);
  t.not(e.code, 'DWC_INTERNAL');
  // and the thread still works afterwards
  const { C } = await runOpAsync('gemm', { A: tensor(Float32Array.of(1, 2), [1, 2]), B: tensor(Float32Array.of(3, 4), [2, 1]) });
  t.deepEqual([...C.toArray()], [11]);
});

test('the work of many async calls is done by at most `threads` threads (one OpenMP team)', async (t) => {
  const threads = addon().info().threads;
  const n = 1024;
  const a = Float32Array.from({ length: n * n }, (_, i) => (i % 7) - 3);
  const b = Float32Array.from({ length: n * n }, (_, i) => (i % 5) - 2);
  const before = threadCpu();
  // a thread counts as busy with ≥ 5 % of the CPU time all threads spent meanwhile (the JS
  // thread's share, copying the inputs, is far below that); the calls go on until that time is
  // at least 2 s (200 ticks), so that one stray tick of a helper thread is under 5 % (a fast
  // AVX-512 machine did 12 such GEMMs in 18 ticks, and a libuv worker's 1 tick counted as busy)
  let delta = [];
  let total = 0;
  for (let r = 0; r < 200 && total < 200; r++) {
    // 4 calls in flight at a time: the libuv pool's 4 workers each pick one up
    await Promise.all(Array.from({ length: 4 }, () => runOpAsync('gemm', { A: tensor(a, [n, n]), B: tensor(b, [n, n]) }, { transB: true })));
    const after = threadCpu();
    delta = [...after].filter(([id]) => id !== String(process.pid)).map(([id, c]) => [id, c - (before.get(id) ?? 0)]); // not ava's main thread
    total = delta.reduce((x, [, d]) => x + d, 0);
  }
  const busy = delta.filter(([, d]) => d >= 0.05 * total).map(([id]) => id);
  t.true(busy.length >= 1, 'some native thread did the work');
  t.true(busy.length <= threads, `${busy.length} busy threads for ${threads} compute threads: ${delta.map(([id, d]) => `${id}:${d}`).join(', ')}`);
});
