// Browser benchmark driver: serves the built app (dist/) plus onnxruntime-web and the ONNX
// export of LiteMedSAM under /bench/, runs www/bench.html in headless Debian Chromium
// (SwiftShader WebGPU: a CPU emulation, not a GPU) and prints one table with ratios.
//
//   node bench/browser/bench.mjs [--engines medfm-cpu,ort-wasm,medfm-webgpu,ort-webgpu] [--runs 5]
//   node bench/browser/bench.mjs --mode propagate [--engines medfm-cpu,ort-wasm] [--runs 3]
//       [--precision int8|fp32] [--series DIR --start FILE --box X0,Y0,X1,Y1 --extent N]
//     a box carried through a series (default: tests/data/series/brain11, as bench/propagate.py)
//
// Needs: `trunk build` (dist/), `npm ci --prefix bench/browser`, and the ONNX files in
// ~/.cache/medfm/onnx (written by `bench/peers.py WHEEL ort`, i.e. bench/run.sh).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { serve } from '../../tests/browser/serve.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const HERE = path.dirname(new URL(import.meta.url).pathname);
const ROOT = path.resolve(HERE, '../..');
const DIST = path.join(ROOT, 'dist');
const ONNX = path.join(os.homedir(), '.cache/medfm/onnx');
const mode = opt('mode', 'slice');
const engines = opt('engines', mode === 'propagate' ? 'medfm-cpu,ort-wasm' : 'medfm-cpu,ort-wasm,medfm-webgpu,ort-webgpu');
const runs = opt('runs', mode === 'propagate' ? '3' : '5');
const precision = opt('precision', 'int8');

const wantsOrt = engines.split(',').some((e) => e.startsWith('ort-'));
for (const f of wantsOrt ? ['lite_medsam_encoder.onnx', 'lite_medsam_decoder.onnx'] : []) {
  if (!fs.existsSync(path.join(ONNX, f))) throw new Error(`${path.join(ONNX, f)} missing: run bench/run.sh (exports the ONNX peers) first`);
}
if (!fs.existsSync(path.join(DIST, 'medfm-wasm_bg.wasm'))) throw new Error('dist/ missing: run `trunk build` first');
fs.rmSync(path.join(DIST, 'bench'), { recursive: true, force: true });
fs.cpSync(path.join(HERE, 'node_modules/onnxruntime-web/dist'), path.join(DIST, 'bench/ort'), { recursive: true });
if (wantsOrt) fs.cpSync(ONNX, path.join(DIST, 'bench/onnx'), { recursive: true });
if (mode === 'propagate') {
  const dir = path.resolve(opt('series', path.join(ROOT, 'tests/data/series/brain11')));
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.dcm')).sort();
  fs.mkdirSync(path.join(DIST, 'bench/series'), { recursive: true });
  for (const f of files) fs.copyFileSync(path.join(dir, f), path.join(DIST, 'bench/series', f));
  const spec = {
    files,
    start: opt('start', 'brain_010.dcm'),
    box: opt('box', '45,60,215,240').split(',').map(Number),
    extent: Number(opt('extent', '5')),
  };
  if (!files.includes(spec.start)) throw new Error(`--start ${spec.start} is not in ${dir}`);
  fs.writeFileSync(path.join(DIST, 'bench/series/index.json'), JSON.stringify(spec));
}
const ortVersion = JSON.parse(fs.readFileSync(path.join(HERE, 'node_modules/onnxruntime-web/package.json'))).version;

const server = await serve(DIST);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--enable-unsafe-webgpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'],
});
let result;
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (process.env.VERBOSE) console.log(`[console] ${m.text()}`); });
  page.on('worker', (w) => w.on('console', (m) => { if (process.env.VERBOSE) console.log(`[worker] ${m.text()}`); }));
  await page.goto(`${server.url}www/bench.html?engines=${engines}&runs=${runs}&mode=${mode}&precision=${precision}`);
  await page.waitForFunction(() => document.body.dataset.done, null, { timeout: 3600000, polling: 1000 });
  result = await page.evaluate(() => window.benchResult);
} finally {
  await browser.close();
  server.close();
}

const fmt = (x) => (x === undefined ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(1)} ms`);
const by = Object.fromEntries(result.rows.map((r) => [r.engine, r]));
if (mode === 'propagate') {
  const spec = result.rows.find((r) => r.spec)?.spec;
  console.log(`Chromium headless (${result.userAgent.match(/Chrome\/[\d.]+/)?.[0]}), onnxruntime-web ${ortVersion}, runs ${result.runs}, ${os.cpus().length} cores, date ${new Date().toISOString().slice(0, 10)}`);
  if (spec) console.log(`series of ${spec.slices} slices, start ${spec.start} (index ${spec.startIndex}), box ${spec.box}, extent ${spec.extent}`);
  console.log('| engine | weights | slices | propagation median [min..max] | slices/s |');
  console.log('|---|---|---|---|---|');
  for (const r of result.rows) {
    if (r.error) { console.log(`| ${r.engine} | failed: ${r.error} | | | |`); continue; }
    console.log(`| ${r.engine} | ${r.precision} | ${r.slices.length} | ${fmt(r.ms.median)} [${fmt(r.ms.min)}..${fmt(r.ms.max)}] | ${(r.slices.length / (r.ms.median / 1000)).toFixed(2)} |`);
  }
  for (const [a, b] of [['medfm-cpu', 'ort-wasm'], ['medfm-webgpu', 'ort-webgpu']]) {
    const x = by[a];
    const y = by[b];
    if (!x || !y || x.error || y.error) continue;
    const ya = new Map(y.slices.map((s) => [s.frame, s.area]));
    const diffs = x.slices.map((s) => `${s.frame}: ${s.area} vs ${ya.get(s.frame) ?? '-'}`);
    const same = x.slices.length === y.slices.length && x.slices.every((s) => ya.has(s.frame));
    console.log(`${a} / ${b}: ${(x.ms.median / y.ms.median).toFixed(2)}x; same slices: ${same}; areas ${diffs.join(', ')}`);
  }
  process.exit(0);
}
console.log(`Chromium headless (${result.userAgent.match(/Chrome\/[\d.]+/)?.[0]}), onnxruntime-web ${ortVersion}, runs ${result.runs}, ${os.cpus().length} cores, date ${new Date().toISOString().slice(0, 10)}`);
console.log('| engine | cold start | encoder median [min..max] | decoder median [min..max] | postprocessing median | whole segment call median | predicted IoU |');
console.log('|---|---|---|---|---|---|---|');
for (const r of result.rows) {
  if (r.error) {
    console.log(`| ${r.engine} | failed: ${r.error} | | | | | |`);
    continue;
  }
  console.log(`| ${r.engine} | ${fmt(r.cold)} | ${fmt(r.encoder.median)} [${fmt(r.encoder.min)}..${fmt(r.encoder.max)}] | ${fmt(r.decoder.median)} [${fmt(r.decoder.min)}..${fmt(r.decoder.max)}] | ${fmt(r.post?.median)} | ${fmt(r.call?.median)} | ${r.iou.toFixed(3)} |`);
}
for (const [a, b] of [['medfm-cpu', 'ort-wasm'], ['medfm-webgpu', 'ort-webgpu']]) {
  const x = by[a];
  const y = by[b];
  if (x && y && !x.error && !y.error) {
    console.log(`${a} / ${b}: cold ${(x.cold / y.cold).toFixed(2)}x, encoder ${(x.encoder.median / y.encoder.median).toFixed(2)}x, decoder ${(x.decoder.median / y.decoder.median).toFixed(2)}x`);
  }
}
