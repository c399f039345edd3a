// Browser benchmark page (www/bench.html): medfm WebGPU / CPU-wasm against
// onnxruntime-web WebGPU / wasm on the same model input, cold start and warm medians.
// Results: rendered in #out and as window.benchResult; body[data-done] when finished.
import { MedFM } from './medfm.js';

const params = new URLSearchParams(location.search);
const ENGINES = (params.get('engines') || 'medfm-cpu,ort-wasm,medfm-webgpu,ort-webgpu').split(',');
const RUNS = Number(params.get('runs') || 5);
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
  if (!ortModule) ortModule = await import('../bench/ort/ort.all.min.mjs');
  const ort = ortModule.default || ortModule;
  ort.env.wasm.numThreads = 1; // no cross-origin isolation here: single thread, as medfm
  ort.env.wasm.wasmPaths = new URL('../bench/ort/', location.href).href;
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

const fmt = (x) => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(1)} ms`);

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

main();
