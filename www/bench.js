// Browser benchmark page (www/bench.html): medfm WebGPU / CPU-wasm against
// onnxruntime-web WebGPU / wasm on the same model input, cold start and warm medians.
// `?mode=propagate`: a box carried through a series (the 3D recipe of docs/design.md,
// "Volumes", with an extent), medfm.propagate against the same loop over onnxruntime-web
// on medfm's own series-recipe model inputs; per-slice areas of both.
// Results: rendered in #out and as window.benchResult; body[data-done] when finished.
import { MedFM } from './medfm.js';

const params = new URLSearchParams(location.search);
const ENGINES = (params.get('engines') || 'medfm-cpu,ort-wasm,medfm-webgpu,ort-webgpu').split(',');
const RUNS = Number(params.get('runs') || 5);
const MODE = params.get('mode') || 'slice';
const PRECISION = params.get('precision') || 'int8';
const BOX = [110, 280, 190, 355];
const out = document.getElementById('out');
const rows = [];
window.benchResult = { runs: RUNS, userAgent: navigator.userAgent, rows };

function log(line) {
  out.textContent = (out.textContent === 'running…' ? '' : out.textContent) + line + '\n';
}

function stats(v) {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  const median = n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  return { median, min: s[0], max: s[n - 1], n };
}

async function benchMedfm(backend) {
  const t0 = performance.now();
  const medfm = new MedFM({});
  const info = await medfm.setBackend(backend, 'int8');
  if (info.backend !== backend) throw new Error(`asked for ${backend}, got ${info.backend} (${info.fallback})`);
  await medfm.open(['../samples/abdomen_mr.dcm']);
  const first = await medfm.segment({ series: 0, frame: 0, box: BOX });
  const cold = performance.now() - t0;
  const enc = [];
  const dec = [];
  const post = [];
  const call = [];
  for (let i = 0; i < RUNS; i++) {
    await medfm.forget({ series: 0, frame: 0 });
    enc.push((await medfm.encode({ series: 0, frame: 0 })).ms);
    const t = performance.now();
    const r = await medfm.segment({ series: 0, frame: 0, box: BOX });
    call.push(performance.now() - t);
    // Like for like with the peer's decoder session run: the decoder and the readback of
    // its outputs; the upsampling/threshold and the worker round trip are reported apart.
    dec.push(r.decodeMs);
    post.push(r.postMs);
  }
  medfm.terminate();
  return { cold, encoder: stats(enc), decoder: stats(dec), post: stats(post), call: stats(call), iou: first.iou, area: first.area };
}

let ortModule = null;
async function benchOrt(ep) {
  const ort = await loadOrt();
  // The same model input as medfm's (its own preprocessing, exported by the engine).
  const medfm = new MedFM({});
  await medfm.open(['../samples/abdomen_mr.dcm']);
  const input = await medfm.modelInput({ series: 0, frame: 0 });
  medfm.terminate();
  const image = new ort.Tensor('float32', input.pixels, [1, 3, 256, 256]);
  const box = new ort.Tensor('float32', Float32Array.from(BOX, (v) => v * input.scale), [1, 4]);
  const t0 = performance.now();
  const opts = { executionProviders: [ep], graphOptimizationLevel: 'all' };
  const encS = await ort.InferenceSession.create('../bench/onnx/lite_medsam_encoder.onnx', opts);
  const decS = await ort.InferenceSession.create('../bench/onnx/lite_medsam_decoder.onnx', opts);
  let emb = (await encS.run({ image })).embedding;
  let res = await decS.run({ embedding: emb, box });
  const cold = performance.now() - t0;
  const iou = res.iou.data[0];
  const enc = [];
  const dec = [];
  for (let i = 0; i < RUNS; i++) {
    let t = performance.now();
    emb = (await encS.run({ image })).embedding;
    await emb.getData(); // on WebGPU the output may stay on the GPU: read it back
    enc.push(performance.now() - t);
    t = performance.now();
    res = await decS.run({ embedding: emb, box });
    await res.logits.getData();
    dec.push(performance.now() - t);
  }
  return { cold, encoder: stats(enc), decoder: stats(dec), iou, area: null };
}

// Propagation: the series bench/browser/bench.mjs serves under /bench/series/ (index.json:
// {files, start, box, extent}); the start file is opened first, so it has the lowest id.
async function openSeries(medfm) {
  const spec = await (await fetch('../bench/series/index.json')).json();
  await medfm.open([`../bench/series/${spec.start}`]);
  await medfm.open(spec.files.filter((f) => f !== spec.start).map((f) => `../bench/series/${f}`));
  if (medfm.series.length !== 1) throw new Error(`expected one series, got ${medfm.series.length}`);
  const refs = medfm.series[0].refs;
  const first = Math.min(...refs.map((r) => r[0]));
  return { ...spec, startIndex: refs.findIndex((r) => r[0] === first), slices: refs.length };
}

async function propagateMedfm(backend) {
  const ms = [];
  let last = null;
  let spec = null;
  for (let i = 0; i < RUNS; i++) {
    // A fresh engine per run (no slice cached), the model loaded before the clock starts.
    const medfm = new MedFM({ weights: { fp32: new URL('../weights/lite_medsam_fp32.bpk', import.meta.url) } });
    const info = await medfm.setBackend(backend, PRECISION);
    if (info.backend !== backend) throw new Error(`asked for ${backend}, got ${info.backend} (${info.fallback})`);
    spec = await openSeries(medfm);
    const t = performance.now();
    last = await medfm.propagate({ series: 0, frame: spec.startIndex, box: spec.box, extent: spec.extent });
    ms.push(performance.now() - t);
    medfm.terminate();
  }
  return { ms: stats(ms), slices: last.slices.map((s) => ({ frame: s.frame, area: s.area, iou: s.iou })), stopped: last.stopped, spec };
}

/** Crop the 256x256 low-res logits to the resized image, bilinear (half-pixel) to rows x cols, threshold at 0. */
function upsample(logits, x) {
  const { rows, cols, newRows: nr, newCols: nc } = x;
  const src = (dst, inN, outN) => Math.max(((dst + 0.5) * inN) / outN - 0.5, 0);
  const mask = new Uint8Array(rows * cols);
  let area = 0;
  for (let y = 0; y < rows; y++) {
    const sy = src(y, nr, rows);
    const y0 = Math.floor(sy);
    const y1 = y0 < nr - 1 ? y0 + 1 : y0;
    const ly = sy - y0;
    for (let xx = 0; xx < cols; xx++) {
      const sx = src(xx, nc, cols);
      const x0 = Math.floor(sx);
      const x1 = x0 < nc - 1 ? x0 + 1 : x0;
      const lx = sx - x0;
      const v = (1 - ly) * ((1 - lx) * logits[y0 * 256 + x0] + lx * logits[y0 * 256 + x1])
        + ly * ((1 - lx) * logits[y1 * 256 + x0] + lx * logits[y1 * 256 + x1]);
      if (v > 0) { mask[y * cols + xx] = 1; area++; }
    }
  }
  return { mask, area };
}

/** The previous mask's bounding box widened by 3 model pixels, clipped (pipeline::propagate::next_box). */
function nextBox(mask, rows, cols, scale) {
  let x0 = Infinity; let y0 = Infinity; let x1 = -1; let y1 = -1;
  for (let i = 0; i < mask.length; i++) {
    if (!mask[i]) continue;
    const x = i % cols; const y = (i - x) / cols;
    if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
  }
  if (x1 < 0) return null;
  const m = 3 / scale;
  const clip = (v, hi) => Math.min(Math.max(v, 0), hi);
  return [clip(x0 - m, cols - 1), clip(y0 - m, rows - 1), clip(x1 + m, cols - 1), clip(y1 + m, rows - 1)];
}

async function propagateOrt(ep) {
  const ort = await loadOrt();
  const medfm = new MedFM({});
  const spec = await openSeries(medfm);
  const inputs = await medfm.seriesModelInputs({ series: 0 });
  medfm.terminate();
  const opts = { executionProviders: [ep], graphOptimizationLevel: 'all' };
  const encS = await ort.InferenceSession.create('../bench/onnx/lite_medsam_encoder.onnx', opts);
  const decS = await ort.InferenceSession.create('../bench/onnx/lite_medsam_decoder.onnx', opts);
  // The recipe with an extent: each slice encoded once, an empty previous mask falls back
  // to the start box (scripts/make_propagation_fixtures.py, `propagate`).
  const once = async () => {
    const cache = new Map();
    const segment = async (i, box) => {
      const x = inputs[i];
      if (!cache.has(i)) {
        const emb = (await encS.run({ image: new ort.Tensor('float32', x.pixels, [1, 3, 256, 256]) })).embedding;
        await emb.getData();
        cache.set(i, emb);
      }
      const res = await decS.run({ embedding: cache.get(i), box: new ort.Tensor('float32', Float32Array.from(box, (v) => v * x.scale), [1, 4]) });
      const { mask, area } = upsample(await res.logits.getData(), x);
      return { mask, area, iou: (await res.iou.getData())[0] };
    };
    const start = spec.startIndex;
    const first = await segment(start, spec.box);
    const kept = new Map([[start, first]]);
    for (const step of [1, -1]) {
      let prev = first;
      for (let ran = 0; ran < spec.extent; ran++) {
        const i = start + step * (ran + 1);
        if (i < 0 || i >= inputs.length) break;
        const x = inputs[i - step];
        const box = nextBox(prev.mask, x.rows, x.cols, x.scale) || spec.box;
        prev = await segment(i, box);
        kept.set(i, prev);
      }
    }
    return [...kept.entries()].sort((a, b) => a[0] - b[0]).map(([frame, r]) => ({ frame, area: r.area, iou: r.iou }));
  };
  await once(); // warm-up: sessions created and run once, as the native peer's warm session
  const ms = [];
  let slices = null;
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    slices = await once();
    ms.push(performance.now() - t);
  }
  return { ms: stats(ms), slices, spec };
}

async function loadOrt() {
  if (!ortModule) ortModule = await import('../bench/ort/ort.all.min.mjs');
  const ort = ortModule.default || ortModule;
  ort.env.wasm.numThreads = 1; // no cross-origin isolation here: single thread, as medfm
  ort.env.wasm.wasmPaths = new URL('../bench/ort/', location.href).href;
  return ort;
}

const fmt = (x) => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(1)} ms`);

async function mainPropagate() {
  log(`propagate; runs ${RUNS}; medfm ${PRECISION} weights; ${navigator.userAgent}`);
  for (const name of ENGINES) {
    try {
      const r = name.startsWith('medfm-') ? await propagateMedfm(name.slice(6)) : await propagateOrt(name.slice(4));
      rows.push({ engine: name, precision: name.startsWith('medfm-') ? PRECISION : 'fp32', ...r });
      log(`${name.padEnd(13)} ${r.slices.length} slices  median ${fmt(r.ms.median)} [${fmt(r.ms.min)}..${fmt(r.ms.max)}]  ${(r.slices.length / (r.ms.median / 1000)).toFixed(2)} slices/s  areas ${r.slices.map((s) => `${s.frame}:${s.area}`).join(' ')}`);
    } catch (e) {
      rows.push({ engine: name, error: String(e.message || e) });
      log(`${name.padEnd(13)} FAILED: ${e.message || e}`);
    }
  }
  document.body.dataset.done = '1';
}

async function main() {
  log(`runs ${RUNS}; ${navigator.userAgent}`);
  for (const name of ENGINES) {
    try {
      const r = name.startsWith('medfm-') ? await benchMedfm(name.slice(6)) : await benchOrt(name.slice(4));
      rows.push({ engine: name, ...r });
      log(`${name.padEnd(13)} cold ${fmt(r.cold).padStart(9)}  encoder ${fmt(r.encoder.median).padStart(9)} [${fmt(r.encoder.min)}..${fmt(r.encoder.max)}]  decoder ${fmt(r.decoder.median).padStart(9)} [${fmt(r.decoder.min)}..${fmt(r.decoder.max)}]  predicted IoU ${r.iou.toFixed(3)}${r.post ? `  (+ postprocessing ${fmt(r.post.median)}; whole segment call from the page ${fmt(r.call.median)})` : ''}`);
    } catch (e) {
      rows.push({ engine: name, error: String(e.message || e) });
      log(`${name.padEnd(13)} FAILED: ${e.message || e}`);
    }
  }
  document.body.dataset.done = '1';
}

if (MODE === 'propagate') mainPropagate(); else main();
