// Browser benchmark driver: serves the built app (dist/) plus onnxruntime-web and the ONNX
// export of LiteMedSAM under /bench/, runs www/bench.html in headless Debian Chromium
// (SwiftShader WebGPU: a CPU emulation, not a GPU) and prints one table with ratios.
//
//   node bench/browser/bench.mjs [--engines medfm-cpu,ort-wasm,medfm-webgpu,ort-webgpu] [--runs 5]
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
const engines = opt('engines', 'medfm-cpu,ort-wasm,medfm-webgpu,ort-webgpu');
const runs = opt('runs', '5');

const wantsOrt = engines.split(',').some((e) => e.startsWith('ort-'));
for (const f of wantsOrt ? ['lite_medsam_encoder.onnx', 'lite_medsam_decoder.onnx'] : []) {
  if (!fs.existsSync(path.join(ONNX, f))) throw new Error(`${path.join(ONNX, f)} missing: run bench/run.sh (exports the ONNX peers) first`);
}
if (!fs.existsSync(path.join(DIST, 'medfm_bg.wasm'))) throw new Error('dist/ missing: run `trunk build` first');
fs.rmSync(path.join(DIST, 'bench'), { recursive: true, force: true });
fs.cpSync(path.join(HERE, 'node_modules/onnxruntime-web/dist'), path.join(DIST, 'bench/ort'), { recursive: true });
if (wantsOrt) fs.cpSync(ONNX, path.join(DIST, 'bench/onnx'), { recursive: true });
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
  await page.goto(`${server.url}www/bench.html?engines=${engines}&runs=${runs}`);
  await page.waitForFunction(() => document.body.dataset.done, null, { timeout: 3600000, polling: 1000 });
  result = await page.evaluate(() => window.benchResult);
} finally {
  await browser.close();
  server.close();
}

const fmt = (x) => (x === undefined ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(1)} ms`);
const by = Object.fromEntries(result.rows.map((r) => [r.engine, r]));
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
