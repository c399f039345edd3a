// The npm package as an integrator uses it (issue 35): the tarball of scripts/npm_pack.sh,
// installed with npm into a fresh Vite 8 project (no workspace link, no plugin, no
// config), type-checked against its declarations (tsc, strict), built with `vite build`,
// the build served under a strict Content-Security-Policy, and driven in headless
// Chromium through the package's contract:
//
//   node tests/browser/package.mjs [--tgz FILE] [--artifacts DIR] [--webgpu]
//
// - a box on the kidney of the MR sample gives the mask of `medfm segment` on the same
//   file and box (IoU >= 0.999, int8), on the CPU (wasm) and, with --webgpu, on WebGPU
//   (SwiftShader: that pass checks the mask, open() and the egress only);
// - open() resolves to the series of the files it was given, also when two calls run at
//   once; `series` takes an index or a SeriesInstanceUID;
// - openPixels() with a file's modality values and window gives the same model input and
//   mask as open() of the file;
// - bad input (a box outside the image, an unknown series, a point label that is not 0/1,
//   pixels of the wrong length or type, a NaN window, foreign weights) is a rejected promise with its code and a clear message, and the
//   worker still answers afterwards;
// - weights given as bytes load; every request goes to the page's own origin;
// - webpack 5 bundles it too, with no configuration but an entry: the same mask.
//
// Without --tgz the package is packed here (scripts/npm_pack.sh; MEDFM_WEB_DIST names
// the web build to reuse). Env: MEDFM_BIN (the native binary, for the reference mask),
// CHROMIUM, MEDFM_VITE (default 8.4.1), MEDFM_TYPESCRIPT (default 5.9.3) and
// MEDFM_WEBPACK (default 5.113.0): the versions installed into the test projects.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ARTIFACTS, ROOT, check, failed, flag, iou, launch, referenceMask as cliMask, run, tarball } from './harness.mjs';
import { csp, serve } from './serve.mjs';

const MR = path.join(ROOT, 'tests/data/MR-SIEMENS-DICOM-WithOverlays.dcm');
const CT = path.join(ROOT, 'tests/data/CT_small.dcm');
const KIDNEY = [110, 280, 190, 355];
const VITE = process.env.MEDFM_VITE || '8.4.1';
const TYPESCRIPT = process.env.MEDFM_TYPESCRIPT || '5.9.3';
const WEBPACK = process.env.MEDFM_WEBPACK || '5.113.0';

// The page's policy: the app's own (index.html), so the package is held to what the app is.
const appCsp = () => csp(ROOT);

// The consumer: what an integrator writes, in TypeScript, against the package's types.
function makeProject(dir, tgz) {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'medfm-consumer', private: true, type: 'module' }, null, 2));
  fs.writeFileSync(path.join(dir, 'index.html'), `<!doctype html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${appCsp()}">
<title>medfm consumer</title>
<script type="module" src="/main.ts"></script></head>
<body></body></html>
`);
  // Typed use of the contract (tsc checks it against index.d.ts); the page's test hooks.
  fs.writeFileSync(path.join(dir, 'main.ts'), `import { MedFM, type CreateOptions, type MedfmError, type SegmentResult, type Series } from 'medfm';

async function segmentFirst(fm: MedFM, bytes: ArrayBuffer, box: [number, number, number, number]): Promise<SegmentResult> {
  const list: Series[] = await fm.open([bytes]);
  return fm.segment({ series: list[0].uid, frame: 0, box });
}

function codeOf(e: unknown): string {
  return (e as MedfmError).code;
}

const hooks = { MedFM, segmentFirst, codeOf, create: (o: CreateOptions) => MedFM.create(o) };
(window as unknown as { medfmTest: typeof hooks }).medfmTest = hooks;
document.body.dataset.ready = '1';
`);
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'ESNext', moduleResolution: 'bundler', lib: ['ES2022', 'DOM'], strict: true, noEmit: true, skipLibCheck: false },
    include: ['main.ts'],
  }, null, 2));
  run('npm', ['install', '--no-audit', '--no-fund', '--silent', '--save-exact', tgz, `vite@${VITE}`, `typescript@${TYPESCRIPT}`], dir);
  const installed = JSON.parse(fs.readFileSync(path.join(dir, 'node_modules/medfm/package.json'), 'utf8'));
  check(!fs.lstatSync(path.join(dir, 'node_modules/medfm')).isSymbolicLink(), `medfm ${installed.version} installed from the tarball (a copy, not a link)`);
  try {
    run(path.join(dir, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json'], dir);
    check(true, 'the consumer type-checks against the package\'s declarations (tsc --strict)');
  } catch (e) {
    check(false, 'the consumer type-checks against the package\'s declarations', String(e.stdout || e.message));
  }
  run(path.join(dir, 'node_modules/.bin/vite'), ['build', '--logLevel', 'warn'], dir);
  const built = fs.readdirSync(path.join(dir, 'dist/assets'));
  check(built.some((f) => f.endsWith('.wasm')) && built.some((f) => f.endsWith('.bpk')) && built.filter((f) => f.endsWith('.js')).length >= 2,
    'vite build emitted the worker, the wasm and the weights with no configuration', built.join(' '));
  return path.join(dir, 'dist');
}

// `medfm segment` on the file and box: its mask (0/1, rows*cols).
// `full`: also the backend-independent checks (bad input, openPixels); the WebGPU pass
// (SwiftShader: minutes per encode here) checks the mask and the egress only.
async function consumerPath(browser, url, backend, ref, full) {
  console.log(`Package in a Vite build, backend ${backend}`);
  const context = await browser.newContext();
  const page = await context.newPage();
  const requests = [];
  const problems = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => { if (/Refused to|panick|RuntimeError|unreachable/i.test(m.text())) problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(String(e)));
  try {
    await page.goto(url);
    await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 30000 });
    const r = await page.evaluate(async ({ backend, box, full }) => {
      const t = window.medfmTest;
      const fm = await t.create({ backend });
      const get = async (p) => (await fetch(p)).arrayBuffer();
      const [mr, ct] = await Promise.all([get('/mr.dcm'), get('/ct.dcm')]);
      // Two calls at once: each resolves to its own file's series.
      const [a, b] = await Promise.all([fm.open([ct]), fm.open([mr])]);
      const all = fm.list();
      const seg = await t.segmentFirst(fm, mr, box); // the MR again: it joins its series
      const byIndex = await fm.segment({ series: b[0].index, frame: 0, box });
      const out = {
        info: fm.info, a: a.map((s) => s.uid), b: b.map((s) => s.uid), errors: [...a.errors, ...b.errors],
        all: all.map((s) => [s.index, s.uid]), rows: seg.rows, cols: seg.cols, mask: Array.from(seg.mask), area: seg.area,
        byIndexSame: byIndex.area === seg.area && byIndex.mask.every((v, i) => v === seg.mask[i]),
      };
      if (!full) {
        fm.terminate();
        return out;
      }
      const rejected = async (p) => p.then(() => 'resolved', (e) => `${t.codeOf(e)}: ${e.message}`);
      out.outside = await rejected(fm.segment({ series: b[0].uid, frame: 0, box: [600, 600, 700, 700] }));
      out.unknown = await rejected(fm.segment({ series: '1.2.3.4', frame: 0, box }));
      out.badLabel = await rejected(fm.segment({ series: b[0].uid, frame: 0, points: [[150, 318, 0.5]] }));
      out.notDicom = (await fm.open([new Uint8Array([1, 2, 3, 4])])).errors.map((e) => e.code);
      // The same pixels as a viewer has them (modality values and the file's window).
      const px = await fm.pixels({ series: b[0].uid, frame: 0 });
      const viewer = { data: px.values, width: px.cols, height: px.rows, modality: 'MR', window: px.window && { center: px.window[0], width: px.window[1] } };
      const p = await fm.openPixels(viewer);
      const [fromFile, fromPixels] = await Promise.all([fm.modelInput({ series: b[0].uid, frame: 0 }), fm.modelInput({ series: p[0].uid, frame: 0 })]);
      out.pixels = {
        series: p.map((s) => [s.rows, s.cols, s.frames]), errors: p.errors.length,
        sameInput: fromFile.pixels.length === fromPixels.pixels.length && fromFile.pixels.every((v, i) => v === fromPixels.pixels[i]),
        area: (await fm.segment({ series: p[0].uid, frame: 0, box })).area,
      };
      const q = await fm.openPixels({ ...viewer, data: Int16Array.from(px.values) });
      const fromInt16 = await fm.modelInput({ series: q[0].uid, frame: 0 });
      out.pixels.int16Same = px.values.every((v) => v === Math.round(v)) && fromInt16.pixels.every((v, i) => v === fromFile.pixels[i]);
      out.pixelsShort = await rejected(fm.openPixels({ ...viewer, data: px.values.subarray(1) }));
      out.pixelsNaN = await rejected(fm.openPixels({ ...viewer, window: { center: NaN, width: 400 } }));
      out.pixelsType = await rejected(fm.openPixels({ ...viewer, data: Array.from(px.values) }));
      out.after = (await fm.segment({ series: b[0].uid, frame: 0, box })).area;
      fm.terminate();
      return out;
    }, { backend, box: KIDNEY, full });
    check(r.info.backend === backend, `the engine runs on ${backend}`, JSON.stringify(r.info));
    check(r.errors.length === 0 && r.a.length === 1 && r.b.length === 1 && r.a[0] !== r.b[0] && r.all.length === 2,
      'open(): two calls at once each resolve to the series of their own file; list() has both', JSON.stringify({ a: r.a, b: r.b, all: r.all }));
    const score = iou(Uint8Array.from(r.mask), ref.mask);
    console.log(`  kidney: area ${r.area} (medfm segment: ${ref.area}), IoU ${score.toFixed(5)}`);
    check(r.rows === ref.rows && r.cols === ref.cols && score >= 0.999, 'segment() by SeriesInstanceUID: the mask of medfm segment on the same file and box (IoU >= 0.999)', `IoU ${score}`);
    check(r.byIndexSame, 'segment() by the series index gives the same mask');
    if (full) checkFull(r, ref);
    const origin = new URL(url).origin;
    const foreign = requests.filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith('data:') && !u.startsWith('blob:'));
    check(foreign.length === 0, 'every request goes to the page\'s origin', foreign.join(' '));
    check(problems.length === 0, 'no CSP violation, panic or page error', problems.join(' | '));
  } finally {
    await context.close();
  }
}

// The backend-independent checks of consumerPath's page.
function checkFull(r, ref) {
  check(/^bad-input: .*(outside|image)/i.test(r.outside), 'a box outside the image: bad-input with the reason', r.outside);
  check(/^bad-input: no series "1\.2\.3\.4"/.test(r.unknown), 'an unknown series: bad-input naming it', r.unknown);
  check(/^bad-input: /.test(r.badLabel), 'a point label that is not 0 or 1: bad-input', r.badLabel);
  check(r.notDicom.length === 1 && r.notDicom[0] === 'bad-input', 'a file that is not DICOM: listed in errors with bad-input', JSON.stringify(r.notDicom));
  check(r.pixels.errors === 0 && JSON.stringify(r.pixels.series) === JSON.stringify([[ref.rows, ref.cols, 1]]) && r.pixels.sameInput,
    'openPixels() with the file\'s modality values and window: the same model input as open() of the file', JSON.stringify(r.pixels));
  check(r.pixels.area === r.area, 'openPixels(): the same mask for the same box', `${r.pixels.area} vs ${r.area}`);
  check(r.pixels.int16Same, 'openPixels() of the same values as an Int16Array: the same model input');
  check(/^bad-input: pixels: data has \d+ values; \d+ x \d+ x 1 frame\(s\) needs \d+/.test(r.pixelsShort), 'openPixels(): a typed array of the wrong length is bad-input with both lengths', r.pixelsShort);
  check(/^bad-input: pixels: window center NaN/.test(r.pixelsNaN), 'openPixels(): a NaN window is bad-input', r.pixelsNaN);
  check(/^bad-input: openPixels needs data/.test(r.pixelsType), 'openPixels(): a plain array is bad-input', r.pixelsType);
  check(r.after === r.area, 'the worker still answers after the rejections, with the same mask', `${r.after} vs ${r.area}`);
}

// Weights as bytes (the `weights` option): the right ones load, foreign ones are refused
// with code 'weights' and their hash, and the engine is not left half-loaded.
async function weightsPath(browser, url, ref) {
  console.log('Package: weights given as bytes');
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(url);
    await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 30000 });
    const r = await page.evaluate(async (box) => {
      const t = window.medfmTest;
      const weights = await (await fetch('/w.bpk')).arrayBuffer();
      const bad = new Uint8Array(weights.slice(0));
      bad[bad.length - 1] ^= 1;
      const refused = await t.create({ backend: 'cpu', weights: bad }).then(() => 'resolved', (e) => `${t.codeOf(e)}: ${e.message}`);
      const fm = await t.create({ backend: 'cpu', weights });
      const seg = await t.segmentFirst(fm, await (await fetch('/mr.dcm')).arrayBuffer(), box);
      const fp32 = await fm.setBackend('cpu', 'fp32').then(() => 'resolved', (e) => `${t.codeOf(e)}: ${e.message}`);
      const still = (await fm.segment({ series: 0, frame: 0, box })).area;
      fm.terminate();
      return { refused, area: seg.area, fp32, still };
    }, KIDNEY);
    check(/^weights: .*sha256 [0-9a-f]{64} is not the int8 weights this build/.test(r.refused), 'foreign weights bytes: refused with code weights and both hashes', r.refused);
    check(r.area === ref.area, 'weights given as an ArrayBuffer: the same mask', `${r.area} vs ${ref.area}`);
    check(/^bad-input: no fp32 weights/.test(r.fp32) && r.still === r.area, 'fp32 without its weights: bad-input, and the int8 model stays loaded', `${r.fp32}; ${r.still}`);
  } finally {
    await context.close();
  }
}

// The same tarball bundled by webpack 5 (production mode, an entry and an output path,
// nothing for medfm): the worker, wasm and weights emitted, and the mask of `medfm
// segment` in Chromium under the app's Content-Security-Policy.
async function webpackPath(browser, dir, tgz, ref) {
  console.log(`Package in a webpack ${WEBPACK} build`);
  fs.mkdirSync(path.join(dir, 'src'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'medfm-webpack-consumer', private: true, type: 'module' }));
  fs.writeFileSync(path.join(dir, 'src/index.js'), "import { MedFM } from 'medfm';\nwindow.MedFM = MedFM;\ndocument.body.dataset.ready = '1';\n");
  fs.writeFileSync(path.join(dir, 'webpack.config.js'), "export default { mode: 'production', entry: './src/index.js', output: { path: new URL('./dist', import.meta.url).pathname, publicPath: 'auto' } };\n");
  run('npm', ['install', '--no-audit', '--no-fund', '--silent', '--save-exact', tgz, `webpack@${WEBPACK}`, 'webpack-cli@6'], dir);
  run(path.join(dir, 'node_modules/.bin/webpack'), ['--no-stats'], dir);
  const out = path.join(dir, 'dist');
  const built = fs.readdirSync(out);
  check(built.some((f) => f.endsWith('.wasm')) && built.some((f) => f.endsWith('.bpk')) && built.filter((f) => f.endsWith('.js')).length >= 2,
    'webpack emitted the worker, the wasm and the weights with no medfm configuration', built.join(' '));
  fs.writeFileSync(path.join(out, 'index.html'), `<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${appCsp()}"><script defer src="main.js"></script></head><body></body></html>\n`);
  const server = await serve(out, { files: { '/mr.dcm': fs.readFileSync(MR) } });
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => { if (/Refused to|panick|RuntimeError|unreachable/i.test(m.text())) problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(String(e)));
  try {
    await page.goto(server.url);
    await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 30000 });
    const r = await page.evaluate(async (box) => {
      const fm = await window.MedFM.create({ backend: 'cpu' });
      const [s] = await fm.open([await (await fetch('/mr.dcm')).arrayBuffer()]);
      const seg = await fm.segment({ series: s.uid, frame: 0, box });
      fm.terminate();
      return { mask: Array.from(seg.mask), area: seg.area };
    }, KIDNEY);
    const score = iou(Uint8Array.from(r.mask), ref.mask);
    check(score >= 0.999, 'webpack build: the mask of medfm segment (IoU >= 0.999)', `IoU ${score}, area ${r.area} vs ${ref.area}`);
    check(problems.length === 0, 'webpack build: no CSP violation, panic or page error', problems.join(' | '));
  } finally {
    await context.close();
    server.close();
  }
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'medfm-package-'));
const tgz = tarball(path.join(work, 'pack'));
console.log(`Package ${path.basename(tgz)} (${(fs.statSync(tgz).size / 1e6).toFixed(1)} MB) into a fresh Vite ${VITE} project`);
const ref = cliMask(MR, KIDNEY, path.join(ARTIFACTS, 'package_ref_mask.png'));
const site = makeProject(path.join(work, 'consumer'), tgz);
const weights = fs.readFileSync(path.join(work, 'consumer/node_modules/medfm/weights/lite_medsam_int8.bpk'));
const server = await serve(site, { files: { '/mr.dcm': fs.readFileSync(MR), '/ct.dcm': fs.readFileSync(CT), '/w.bpk': weights } });
const browser = await launch();
try {
  await consumerPath(browser, server.url, 'cpu', ref, true);
  await weightsPath(browser, server.url, ref);
  await webpackPath(browser, path.join(work, 'webpack'), tgz, ref);
  if (flag('webgpu')) await consumerPath(browser, server.url, 'webgpu', ref, false);
} finally {
  await browser.close();
  server.close();
}
if (failed()) {
  console.log(`${failed()} check(s) failed (project kept in ${work})`);
  process.exit(1);
}
fs.rmSync(work, { recursive: true, force: true });
console.log('package: all checks passed');
