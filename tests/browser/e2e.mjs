// End-to-end tests of the web app (dist/, built by trunk) in headless Debian Chromium.
//
//   node tests/browser/e2e.mjs [--path cpu|pacs|webgpu|all] [--dist DIST] [--artifacts DIR]
//
// Env: MEDFM_BIN (the native `medfm` binary, for the reference mask area), CHECK_PYTHON
// (a Python with highdicom, for reading the exported SEG back), CHROMIUM (default
// /usr/bin/chromium). Exits non-zero on the first failed check, saying which.
//
// CPU path (forced CPU, the broad one): bundled samples listed; box on the kidney gives
// the area of `medfm segment` on the same box within 2 %; every viewer interaction
// (wheel, Up/Down, Home/End, presets 1-5, i, Space, W/L drag, zoom, pan, points,
// shift-click, undo/redo, segments, opacity, picker, drag-and-drop, bad file); JS API;
// SEG/PNG/NIfTI export (SEG read back by highdicom); propagation through a series (the
// CLI's slices and areas, decoder-only re-runs, cancel, a two-segment SEG, the p key);
// egress: every request goes to the
// app's origin and none after the initial load sends a body; second visit uses the
// cached weights; no panic. WebGPU path (SwiftShader): backend is WebGPU, same box, same
// area check, SEG export, no panic.
//
// PACS path (issue 22): a real Orthanc with its DICOMweb plugin (basic auth), behind the
// app's server as a same-origin proxy and then as a CORS-enabled PACS on another origin
// (the app configured by scripts/configure_pacs.sh): the "Open from PACS" panel searches,
// lists the series, opens it (first slice before the last arrives), a box gives the CLI's
// mask, Save to PACS stores the SEG after a confirmation (the only request with a body);
// nothing cached, no credentials remembered; cancel, 401, 404, a disallowed origin and a
// PACS that is down give their errors.
//
// Privacy (issue 19): the CPU path runs with no Content-Security-Policy at all (header and
// meta tag removed by serve.mjs), so any foreign request the code made would go out and
// be recorded; the WebGPU path runs with the policy and fails on any violation. Requests
// of the page, its worker and the service worker are recorded (playwright reports the
// service worker's with PW_EXPERIMENTAL_SERVICE_WORKER_NETWORK_EVENTS=1, set below) and
// every phase (first load, work, panic recovery, second visit, offline) is checked against
// an allowlist of the app's own paths. The service worker caches the app shell only: a
// DICOM opened by URL is never cached, and offline it fails instead of being answered
// with another one.
process.env.PW_EXPERIMENTAL_SERVICE_WORKER_NETWORK_EVENTS ??= '1';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { ARTIFACTS, ROOT, check, failed, launch, opt, readPng } from './harness.mjs';
import { PACS_AUTH, PACS_PASSWORD, PACS_USER, freePort, orthancRequest, startOrthanc } from './orthanc.mjs';
import { forward, resolvePath, serve } from './serve.mjs';

const DIST = path.resolve(opt('dist', path.join(ROOT, 'dist')));
const WHICH = opt('path', 'all');
const MR = path.join(ROOT, 'tests/data/MR-SIEMENS-DICOM-WithOverlays.dcm');
const KIDNEY = [110, 280, 190, 355];


function referenceArea(box, precision) {
  const bin = process.env.MEDFM_BIN;
  if (!bin) throw new Error('MEDFM_BIN is not set (path of the native medfm binary)');
  const out = execFileSync(bin, ['segment', MR, '--box', box.join(','), '--cpu', '--precision', precision, '--json', '--out', path.join(ARTIFACTS, 'ref_mask.png')], { encoding: 'utf8' });
  return JSON.parse(out).area;
}

// Every DICOM file of tests/data (`.dcm`, and the extensionless slices of series/).
function dataFiles(dir = path.join(ROOT, 'tests/data')) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return dataFiles(p);
    return e.name.endsWith('.dcm') || p.includes(`${path.sep}series${path.sep}`) ? [p] : [];
  }).sort();
}

// One display rule for the CLI and the browser (issue 20): for every DICOM file of
// tests/data, the viewer's rendering (MedFM.render, default view: the frame's first VOI
// or its range, MONOCHROME1 inverted, colour clamped) has the pixels of `medfm convert
// FILE --out x.png` (frame 0); a file the CLI refuses is refused by the viewer too (and
// JPEG-LS, which only the native build decodes, is refused by the viewer with the reason).
async function displayParity(page) {
  const rows = [];
  let same = 0;
  for (const file of dataFiles()) {
    const name = path.relative(ROOT, file);
    const png = path.join(ARTIFACTS, 'parity.png');
    fs.rmSync(png, { force: true });
    let cli = null;
    let cliError = null;
    try {
      execFileSync(process.env.MEDFM_BIN, ['convert', file, '--out', png], { stdio: 'pipe' });
      cli = readPng(fs.readFileSync(png));
    } catch (e) {
      cliError = String(e.stderr || e.message).trim().split('\n').pop();
    }
    const web = await page.evaluate(async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const list = await window.medfm.open([new File([bytes], 'x.dcm')]);
      if (list.errors.length) return { error: list.errors[0].error };
      const { id, s } = window.lastOpened();
      const f = window.medfm.series[s].refs.findIndex((r) => r[0] === id && r[1] === 0);
      try {
        const r = await window.medfm.render({ series: s, frame: f });
        return { rows: r.rows, cols: r.cols, rgba: Array.from(r.rgba) };
      } catch (e) {
        return { error: e.message, code: e.code };
      }
    }, fs.readFileSync(file).toString('base64'));
    if (cliError || web.error) {
      // JPEG-LS: the browser build has no decoder (CharLS is C++) and says so.
      const webOnly = !cliError && /JPEG-LS is not supported in this build/.test(web.error);
      if (!(cliError && web.error) && !webOnly) rows.push({ name, cliError, webError: web.error });
      continue;
    }
    if (cli.width !== web.cols || cli.height !== web.rows) {
      rows.push({ name, cli: [cli.width, cli.height], web: [web.cols, web.rows] });
      continue;
    }
    let worst = 0;
    let differ = 0;
    for (let i = 0; i < cli.width * cli.height; i++) {
      for (let c = 0; c < 3; c++) {
        const d = Math.abs(web.rgba[i * 4 + c] - cli.data[i * cli.channels + (cli.channels === 1 ? 0 : c)]);
        worst = Math.max(worst, d);
        if (d) differ += 1;
      }
    }
    // Same Rust code on both sides; only a libm difference in exp (SIGMOID) could move a
    // value lying on a rounding boundary by one level.
    if (worst > 1 || differ > 1e-4 * cli.width * cli.height * 3) rows.push({ name, worst, differ });
    else same += 1;
  }
  check(rows.length === 0 && same >= 40, `the viewer renders every file of tests/data as \`medfm convert --out x.png\` does (${same} files the same, the rest refused by both)`, JSON.stringify(rows));
}

// The viewer's slice order is the CLI's: the CT series opened in reverse file order lists
// its frames in the order of the slices of `medfm convert DIR --out x.nii`.
async function seriesOrderParity(page) {
  const dir = path.join(ROOT, 'tests/data/series/ct5n');
  const nii = path.join(ARTIFACTS, 'ct5n.nii');
  execFileSync(process.env.MEDFM_BIN, ['convert', dir, '--out', nii], { stdio: 'pipe' });
  const buf = fs.readFileSync(nii);
  const [nx, ny, nz] = [buf.readInt16LE(42), buf.readInt16LE(44), buf.readInt16LE(46)];
  const off = buf.readFloatLE(108);
  const slices = Array.from({ length: nz }, (_, k) => Array.from({ length: nx * ny }, (_, i) => buf.readFloatLE(off + 4 * (k * nx * ny + i))));
  const files = fs.readdirSync(dir).sort().reverse().map((f) => fs.readFileSync(path.join(dir, f)).toString('base64'));
  const web = await page.evaluate(async (list) => {
    await window.medfm.open(list.map((b64, i) => new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], `s${i}.dcm`)));
    const { id, s } = window.lastOpened();
    const out = [];
    for (let f = 0; f < window.medfm.series[s].frames; f++) out.push(Array.from((await window.medfm.pixels({ series: s, frame: f })).values));
    return { out, warnings: window.medfm.series[s].warnings };
  }, files);
  const same = web.out.length === nz && web.out.every((v, k) => v.length === slices[k].length && v.every((x, i) => Math.abs(x - slices[k][i]) < 1e-3));
  check(same && web.warnings.length === 0, 'the viewer orders a series as the CLI (slices along the normal, from the engine)', JSON.stringify({ frames: web.out.length, nz, warnings: web.warnings }));
}

// A box carried through a series (issue 21) on the brain MR of tests/data/series/brain11,
// opened by displayParity: through the JS API the same slices and areas (within 2 %, as
// for one slice) and volume as `medfm segment --propagate`; a changed box re-runs only the
// decoder; a cancel stops within one slice; two segments exported in one SEG read back by
// highdicom; in the viewer, the Propagate key fills the other slices and the segment list
// shows the volume.
async function propagationChecks(page) {
  const precision = await page.evaluate(() => window.medfm.info.precision);
  const start = path.join(ROOT, 'tests/data/series/brain11/brain_010.dcm');
  const BRAIN = [45, 60, 215, 240];
  const cli = JSON.parse(execFileSync(process.env.MEDFM_BIN, ['segment', start, '--box', BRAIN.join(','), '--propagate', '--extent', '2', '--cpu',
    '--precision', precision, '--json', '--out', path.join(ARTIFACTS, 'propagated_cli.dcm')], { encoding: 'utf8' }));
  const startUid = cli.slices.find((x) => x.index === cli.start).sop_instance_uid;
  const web = await page.evaluate(async ({ uid, box }) => {
    const m = window.medfm;
    const s = m.series.findIndex((x) => x.refs.some((_, f) => m.meta({ series: x.index, frame: f }).sop_instance_uid === uid));
    const frame = m.series[s].refs.findIndex((_, f) => m.meta({ series: s, frame: f }).sop_instance_uid === uid);
    const seen = [];
    const a = await m.propagate({ series: s, frame, box, extent: 2, onProgress: (p) => seen.push(p.frame) });
    // A box 2 px larger: every slice is encoded already (decoder only).
    const encodes = [];
    const b = await m.propagate({ series: s, frame, box: [box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2], extent: 2, onProgress: (p) => encodes.push(p.encodeMs) });
    // Cancel as the start slice's mask arrives: at most one slice more.
    const ctl = new AbortController();
    const c = await m.propagate({ series: s, frame, box, signal: ctl.signal, onProgress: () => ctl.abort() });
    // A second segment (the right eye, from two slices down) and one SEG with both.
    const eye = await m.propagate({ series: s, frame: frame - 2, box: [80, 25, 115, 55], minIou: 0.8 });
    const both = [
      { label: 'Brain', color: [230, 60, 60], masks: a.slices },
      { label: 'Right eye', color: [240, 200, 40], masks: eye.slices },
    ];
    const seg = await m.exportSeg({ series: s, segments: both });
    // The same segments as a NIfTI label map: the image volume's header, label = number.
    const labels = await m.exportNifti({ series: s, segments: both });
    const image = await m.exportNifti({ series: s });
    const plane = m.series[s].rows * m.series[s].cols;
    const want = new Float32Array(plane * m.series[s].frames);
    both.forEach((x, k) => x.masks.forEach((q) => q.mask.forEach((b, i) => { if (b) want[q.frame * plane + i] = k + 1; })));
    const got = new DataView(labels.buffer, labels.byteOffset + 352);
    let differ = labels.length === 352 + 4 * want.length ? 0 : -1;
    for (let i = 0; differ >= 0 && i < want.length; i++) if (got.getFloat32(4 * i, true) !== want[i]) differ += 1;
    const nifti = { sameHeader: labels.subarray(0, 348).every((b, i) => b === image[i]), differ, labelled: want.filter((v) => v).length };
    const uids = m.series[s].refs.map((_, f) => m.meta({ series: s, frame: f }).sop_instance_uid);
    const bad = await m.propagate({ series: s, frame, box: [45, 60, 300, 240] }).then(() => 'resolved', (e) => `${e.code}: ${e.message}`);
    // The series-recipe model inputs (the propagation benchmark's peer runs on them): one
    // per slice, 0..1 with a maximum of 1 inside the resized image, zero padding outside.
    const inputs = await m.seriesModelInputs({ series: s });
    const inputsOk = inputs.length === m.series[s].frames && inputs.every((x) => {
      if (x.pixels.length !== 3 * 256 * 256 || Math.abs(x.scale * Math.max(x.rows, x.cols) - 256) > 1e-3) return false;
      let max = 0;
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < 256; y++) {
          for (let xx = 0; xx < 256; xx++) {
            const v = x.pixels[c * 65536 + y * 256 + xx];
            if (v < 0 || v > 1 || ((y >= x.newRows || xx >= x.newCols) && v !== 0)) return false;
            max = Math.max(max, v);
          }
        }
      }
      return Math.abs(max - 1) < 1e-6;
    });
    const list = (r) => r.slices.map((x) => ({ frame: x.frame, area: x.area, iou: x.iou }));
    return {
      s, frame, seen, a: { ...a, slices: list(a) }, encodes, b: list(b), c: { stopped: c.stopped, slices: list(c) }, eye: list(eye),
      masks: [...a.slices, ...eye.slices].map((x) => Array.from(x.mask)), seg: Array.from(seg), uids, rows: m.series[s].rows, cols: m.series[s].cols, bad, nifti, inputsOk,
    };
  }, { uid: startUid, box: BRAIN });
  const same = web.a.slices.length === cli.slices.length && web.a.slices.every((x, k) => x.frame === cli.slices[k].index && Math.abs(x.area - cli.slices[k].area) <= 0.02 * cli.slices[k].area);
  console.log(`  propagate: ${web.a.slices.map((x) => `${x.frame}:${x.area}`).join(' ')} (medfm segment --propagate: ${cli.slices.map((x) => `${x.index}:${x.area}`).join(' ')}), ${web.a.volumeMl && web.a.volumeMl.toFixed(2)} mL, ${web.a.ms.toFixed(0)} ms`);
  check(web.frame === cli.start && same, 'medfm.propagate(): the slices and areas (within 2 %) of medfm segment --propagate', JSON.stringify({ web: web.a.slices, cli: cli.slices }));
  check(web.inputsOk, 'seriesModelInputs(): one model input per slice, 0..1 inside the resized image, zero padding');
  check(Math.abs(web.a.volumeMl - cli.volume_ml) <= 0.02 * cli.volume_ml && JSON.stringify(web.a.stopped) === '["extent","extent"]', 'propagate: volume in mL as the CLI, stopped by the extent', JSON.stringify([web.a.volumeMl, cli.volume_ml, web.a.stopped]));
  check(web.seen.length === web.a.slices.length, 'propagate: onProgress sees every mask as it comes', JSON.stringify(web.seen));
  check(web.encodes.length === web.b.length && web.encodes.every((ms) => ms === 0), 'propagate again with another box: the decoder only (every slice encoded once)', JSON.stringify(web.encodes));
  check(JSON.stringify(web.c.stopped) === '["cancelled","cancelled"]' && web.c.slices.length <= 2, 'a cancel stops the propagation within one slice', JSON.stringify(web.c));
  check(/^bad-input: .*outside/.test(web.bad), 'a box outside the start slice is refused (bad-input)', web.bad);
  check(web.nifti.sameHeader && web.nifti.differ === 0 && web.nifti.labelled > 0, 'exportNifti with segments: a label map on the series\' grid (its header), label = segment number, the later one on overlap', JSON.stringify(web.nifti));
  const segPath = path.join(ARTIFACTS, 'two_segments_seg.dcm');
  fs.writeFileSync(segPath, Uint8Array.from(web.seg));
  const maskPath = path.join(ARTIFACTS, 'two_segments.u8');
  fs.writeFileSync(maskPath, Uint8Array.from(web.masks.flat()));
  const sources = [...web.a.slices.map((x) => [web.uids[x.frame], null, 1]), ...web.eye.map((x) => [web.uids[x.frame], null, 2])];
  const srcPath = path.join(ARTIFACTS, 'two_segments_sources.json');
  fs.writeFileSync(srcPath, JSON.stringify(sources));
  const segsPath = path.join(ARTIFACTS, 'two_segments_segments.json');
  fs.writeFileSync(segsPath, JSON.stringify([{ label: 'Brain', color: [230, 60, 60] }, { label: 'Right eye', color: [240, 200, 40] }]));
  try {
    const out = execFileSync(process.env.CHECK_PYTHON || 'python3', [path.join(ROOT, 'scripts/check_seg.py'), segPath, maskPath, String(web.rows), String(web.cols), srcPath, segsPath], { encoding: 'utf8' });
    check(true, `exportSeg with two propagated segments: highdicom reads every frame, label and colour: ${out.trim().split('\n').pop()}`);
  } catch (e) {
    check(false, 'exportSeg with two propagated segments is read back by highdicom', String(e.stdout || '') + String(e.stderr || e.message));
  }

  // The viewer: a box on the slice, p, the other slices get masks; the list shows mL.
  await page.evaluate(async (s) => { await window.app.openItems([]); await window.app.showFrame(s, 0); }, web.s);
  await page.evaluate((f) => window.app.showFrame(window.app.cur.series, f), web.frame);
  await page.waitForFunction((f) => window.app.cur.frame === f && window.app.rendered && window.app.rendered.rows === 256, web.frame);
  await page.fill('#segment-name', 'Brain');
  await page.click('#add-segment');
  await page.keyboard.press('s');
  await drawBox(page, BRAIN);
  await idle(page);
  await page.keyboard.press('p');
  await page.waitForFunction(() => window.app.lastPropagation && !window.app.propagating, null, { timeout: 600000, polling: 500 });
  await idle(page);
  const ui = await page.evaluate(() => {
    const seg = window.app.segments[window.app.active];
    const s = window.app.cur.series;
    return {
      frames: [...seg.results.keys()].filter((k) => Number(k.split(':')[0]) === s).length,
      list: document.getElementById('segments').textContent,
      prop: window.app.lastPropagation,
    };
  });
  check(ui.frames === ui.prop.slices.length && ui.frames > 1 && /Brain · .* mL/.test(ui.list), 'Propagate (p) in the viewer: masks on the slices reached, the volume in the segment list', JSON.stringify({ frames: ui.frames, list: ui.list, stopped: ui.prop.stopped }));
  await page.evaluate((f) => window.app.showFrame(window.app.cur.series, f), web.frame + 1);
  await page.waitForFunction((f) => window.app.cur.frame === f, web.frame + 1);
  await page.screenshot({ path: path.join(ARTIFACTS, 'viewer_propagated.png') });
}

// Record every request of the page, its worker and the service worker, and every
// Content-Security-Policy violation (the page's event, and the "Refused to ..." console
// message Chromium prints in the page and in workers).
function recordRequests(page, log) {
  const rec = (r) => {
    let sw = false;
    try {
      sw = !!(r.serviceWorker && r.serviceWorker());
    } catch {
      sw = false;
    }
    log.push({ url: r.url(), method: r.method(), body: r.postDataBuffer(), t: Date.now(), sw, request: r });
  };
  page.on('request', rec); // the page and its dedicated worker
  page.context().on('request', rec); // also the service worker's own fetches (some twice: harmless)
  const watch = (text) => {
    if (/panick|RuntimeError|unreachable/i.test(text)) log.panics = (log.panics || []).concat(text);
    if (/Refused to|CSP violation/.test(text)) log.csp = (log.csp || []).concat(text);
  };
  page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  page.on('console', (m) => {
    watch(m.text());
    if (process.env.VERBOSE) console.log(`    [console] ${m.text()}`);
  });
  page.on('pageerror', (e) => { log.pageErrors = (log.pageErrors || []).concat(String(e)); });
  page.on('worker', (w) => w.on('console', (m) => {
    watch(m.text());
    if (process.env.VERBOSE) console.log(`    [worker] ${m.text()}`);
  }));
}

// The app's own paths: what any request may ask for (query strings aside).
const ALLOWED = new Set([
  '/', '/index.html', '/medfm-wasm.js', '/medfm-wasm_bg.wasm', '/sw.js', '/favicon.ico',
  '/www/app.js', '/www/medfm.js', '/www/worker.js', '/www/display.js', '/www/app.css',
  '/shaders/display.wgsl', '/samples/index.json', '/samples/abdomen_mr.dcm', '/samples/head_ct.dcm',
  '/weights/lite_medsam_int8.bpk', '/weights/lite_medsam_fp32.bpk',
  // Served by the test as a same-origin DICOM URL (a WADO proxy) and a redirect away.
  '/x.dcm', '/away.dcm',
  // The deployment's settings (absent here: a 404).
  '/config.json',
]);

async function waitReady(page, timeout) {
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout, polling: 500 });
  const state = await page.evaluate(() => document.body.dataset.ready);
  if (state !== '1') throw new Error(`app failed to start: ${await page.textContent('#status')}`);
}

async function idle(page, timeout = 600000) {
  await page.waitForFunction(() => window.app.busy === 0, null, { timeout, polling: 200 });
}

// Drag a box over image pixels `box` with the mouse (left button, segment tool).
async function drawBox(page, box) {
  const [a, b] = await page.evaluate((bx) => [window.app.display.toCanvas(bx[0], bx[1]), window.app.display.toCanvas(bx[2], bx[3])], box);
  const r = await page.locator('#view').boundingBox();
  await page.mouse.move(r.x + a[0], r.y + a[1]);
  await page.mouse.down();
  await page.mouse.move(r.x + (a[0] + b[0]) / 2, r.y + (a[1] + b[1]) / 2, { steps: 3 });
  await page.mouse.move(r.x + b[0], r.y + b[1], { steps: 3 });
  await page.mouse.up();
}

async function clickImage(page, x, y, modifiers = []) {
  const c = await page.evaluate(([px, py]) => window.app.display.toCanvas(px, py), [x, y]);
  const r = await page.locator('#view').boundingBox();
  for (const m of modifiers) await page.keyboard.down(m);
  await page.mouse.click(r.x + c[0], r.y + c[1]);
  for (const m of modifiers) await page.keyboard.up(m);
}

async function segmentKidney(page, label) {
  await page.evaluate(() => {
    const li = document.querySelector('#series-list li[data-series="0"]');
    li.click();
  });
  await page.waitForFunction(() => window.app.cur.series === 0 && window.app.rendered && window.app.rendered.rows === 484);
  await page.keyboard.press('s');
  await drawBox(page, KIDNEY);
  await page.waitForFunction(() => window.app.lastResult !== null, null, { timeout: 1200000, polling: 500 });
  await idle(page, 1200000);
  const res = await page.evaluate(() => ({ ...window.app.lastResult, box: window.app.segments[window.app.active].prompts.get('0:0').box }));
  const precision = await page.evaluate(() => window.medfm.info.precision);
  const ref = referenceArea(res.box, precision);
  console.log(`  ${label}: box ${res.box} area ${res.area} (medfm segment: ${ref}), IoU ${res.iou.toFixed(3)}, ${res.backend}, ${res.ms.toFixed(0)} ms (encode ${res.encodeMs.toFixed(0)} ms)`);
  check(Math.abs(res.area - ref) <= 0.02 * ref, `${label}: mask area within 2 % of medfm segment`, `${res.area} vs ${ref}`);
  check(res.lowConfidence === (res.iou < 0.9), `${label}: lowConfidence flags predicted IoU below 0.9`, `${res.lowConfidence} at ${res.iou}`);
  return res;
}

async function exportSegAndCheck(page, label) {
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#export-seg')]);
  const segPath = path.join(ARTIFACTS, `${label}_seg.dcm`);
  await dl.saveAs(segPath);
  // The SEG holds every segment with a mask in the series, in order, each its frames.
  const { masks, sources, segments, rows, cols } = await page.evaluate(() => {
    const s = window.app.cur.series;
    const out = { masks: [], sources: [], segments: [], rows: 0, cols: 0 };
    for (const seg of window.app.segments) {
      const mine = [...seg.results].filter(([k]) => Number(k.split(':')[0]) === s).sort((a, b) => Number(a[0].split(':')[1]) - Number(b[0].split(':')[1]));
      if (!mine.length) continue;
      out.segments.push({ label: seg.name, color: seg.color });
      for (const [k, r] of mine) {
        out.masks.push(Array.from(r.mask));
        out.sources.push([window.medfm.meta({ series: s, frame: Number(k.split(':')[1]) }).sop_instance_uid, null, out.segments.length]);
        [out.rows, out.cols] = [r.rows, r.cols];
      }
    }
    return out;
  });
  const maskPath = path.join(ARTIFACTS, `${label}_mask.u8`);
  fs.writeFileSync(maskPath, Uint8Array.from(masks.flat()));
  const srcPath = path.join(ARTIFACTS, `${label}_sources.json`);
  fs.writeFileSync(srcPath, JSON.stringify(sources));
  const segsPath = path.join(ARTIFACTS, `${label}_segments.json`);
  fs.writeFileSync(segsPath, JSON.stringify(segments));
  const py = process.env.CHECK_PYTHON || 'python3';
  try {
    const out = execFileSync(py, [path.join(ROOT, 'scripts/check_seg.py'), segPath, maskPath, String(rows), String(cols), srcPath, segsPath], { encoding: 'utf8' });
    check(true, `${label}: exported SEG parses (highdicom) and holds every segment's masks: ${out.trim().split('\n').pop()}`);
  } catch (e) {
    check(false, `${label}: exported SEG parses`, String(e.stdout || '') + String(e.stderr || e.message));
  }
}

// Every request since `since` went to the app's origin, to an allowed path; none after the
// initial load sent a body; no CSP violation.
function checkEgress(log, origin, since, label, initialDone = since) {
  const phase = log.filter((r) => r.t >= since);
  const foreign = phase.filter((r) => !r.url.startsWith(origin) && !r.url.startsWith('blob:') && !r.url.startsWith('data:'));
  check(foreign.length === 0, `${label}: every request goes to ${origin}`, JSON.stringify(foreign.map((r) => r.url)));
  const stray = phase.filter((r) => r.url.startsWith(origin) && !ALLOWED.has(new URL(r.url).pathname));
  check(stray.length === 0, `${label}: every request is for one of the app's own paths`, JSON.stringify(stray.map((r) => r.url)));
  const sent = phase.filter((r) => r.t >= initialDone && (r.method === 'POST' || r.method === 'PUT' || (r.body && r.body.length)));
  check(sent.length === 0, `${label}: no POST/PUT and no request body after the initial load`, JSON.stringify(sent.map((r) => `${r.method} ${r.url}`)));
  check(!log.csp, `${label}: no Content-Security-Policy violation`, JSON.stringify(log.csp));
}

// Every URL held by the Cache API, by cache.
async function cachedUrls(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const name of await caches.keys()) {
      out[name] = (await (await caches.open(name)).keys()).map((r) => new URL(r.url).pathname + new URL(r.url).search);
    }
    return out;
  });
}

async function cpuPath(browser, url, server, trap) {
  console.log('CPU path (forced CPU)');
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 820 } });
  const page = await context.newPage();
  const log = [];
  recordRequests(page, log);
  const t0 = Date.now();
  await page.goto(`${url}?backend=cpu`);
  await waitReady(page, 600000);
  // The image opened last (the highest image id) and the series it joined.
  await page.evaluate(() => {
    window.lastOpened = () => {
      const id = Math.max(...window.medfm.series.flatMap((x) => x.refs.map((r) => r[0])));
      return { id, s: window.medfm.series.findIndex((x) => x.refs.some((r) => r[0] === id)) };
    };
  });
  const initialDone = Date.now();
  console.log(`  ready in ${((initialDone - t0) / 1000).toFixed(1)} s; timings: ${await page.textContent('#timings')}`);
  checkEgress(log, url, t0, 'cpu, first load (no CSP)');
  check((await page.evaluate(() => window.medfm.backend)) === 'cpu', 'backend is cpu when forced', await page.textContent('#backend'));
  check((await page.locator('#series-list li[data-series]').count()) === 2, 'the two bundled samples are listed');
  check((await page.locator('#series-list li.study').count()) === 2, 'series are grouped by study');

  const res = await segmentKidney(page, 'cpu');
  check(res.backend === 'cpu', 'mask computed on the cpu backend');
  await page.screenshot({ path: path.join(ARTIFACTS, 'viewer_cpu.png') });

  // Prompt interactions: positive point, negative point (shift-click), undo, redo.
  const pts = () => page.evaluate(() => window.app.segments[window.app.active].prompts.get('0:0').points.map((p) => p[2]));
  await clickImage(page, 150, 318);
  await idle(page);
  await clickImage(page, 120, 290, ['Shift']);
  await idle(page);
  check(JSON.stringify(await pts()) === '[1,0]', 'click adds a positive point, shift-click a negative one', JSON.stringify(await pts()));
  await page.keyboard.press('Control+z');
  await idle(page);
  check(JSON.stringify(await pts()) === '[1]', 'Ctrl+Z undoes the last prompt change');
  await page.keyboard.press('Control+y');
  await idle(page);
  check(JSON.stringify(await pts()) === '[1,0]', 'Ctrl+Y redoes it');
  const decodeOnly = await page.evaluate(() => window.app.lastResult.encodeMs);
  check(decodeOnly === 0, 'prompt changes reuse the cached embedding (decode only)');

  // Window/level: presets, drag, invert, reset.
  // The display's zoom/pan/opacity and the window/inversion it shows (rendered by the engine).
  const view = () => page.evaluate(async () => {
    await window.app.renderDone();
    const r = window.app.rendered;
    return { ...window.app.display.view, center: r.window && r.window.center, width: r.window && r.window.width, invert: r.inverted };
  });
  const presets = { 1: [40, 400], 2: [-600, 1500], 3: [90, 150], 4: [480, 2500], 5: [40, 80] };
  for (const [k, [c, w]] of Object.entries(presets)) {
    await page.keyboard.press(k);
    const v = await view();
    check(v.center === c && v.width === w, `key ${k} sets window ${w}/${c}`, JSON.stringify([v.center, v.width]));
  }
  await page.keyboard.press('w');
  const before = await view();
  const r = await page.locator('#view').boundingBox();
  await page.mouse.move(r.x + 300, r.y + 300);
  await page.mouse.down();
  await page.mouse.move(r.x + 360, r.y + 330, { steps: 4 });
  await page.mouse.up();
  const after = await view();
  check(after.width > before.width && after.center > before.center, 'left drag with the W/L tool changes width and level');
  await page.keyboard.press('i');
  check((await view()).invert === true, 'i inverts');
  // Zoom (right drag) and pan (middle drag).
  await page.mouse.move(r.x + 320, r.y + 320);
  await page.mouse.down({ button: 'right' });
  await page.mouse.move(r.x + 320, r.y + 250, { steps: 4 });
  await page.mouse.up({ button: 'right' });
  check((await view()).zoom > after.zoom, 'right drag zooms in');
  const z = await view();
  await page.mouse.move(r.x + 320, r.y + 320);
  await page.mouse.down({ button: 'middle' });
  await page.mouse.move(r.x + 360, r.y + 340, { steps: 4 });
  await page.mouse.up({ button: 'middle' });
  const pan = await view();
  check(pan.offset[0] > z.offset[0] && pan.offset[1] > z.offset[1], 'middle drag pans');
  await page.keyboard.press(' ');
  const reset = await view();
  check(reset.invert === false && reset.zoom < pan.zoom && reset.width !== after.width, 'Space resets the view');
  await page.keyboard.press('s');

  // Segments and opacity.
  await page.fill('#segment-name', 'Left kidney');
  await page.click('#add-segment');
  check((await page.evaluate(() => window.app.segments.map((s) => s.name))).join('|') === 'Segment 1|Left kidney', 'a second named segment is added');
  await drawBox(page, [285, 285, 355, 360]);
  await idle(page);
  const two = await page.evaluate(() => window.app.segments.map((s) => (s.results.get('0:0') || {}).area || 0));
  check(two[0] > 0 && two[1] > 0, 'both segments have a mask on the frame', JSON.stringify(two));
  await page.locator('#opacity').fill('0.7');
  check((await view()).opacity === 0.7, 'opacity slider sets the overlay opacity');
  await page.screenshot({ path: path.join(ARTIFACTS, 'viewer_two_segments.png') });
  await page.evaluate(() => { window.app.active = 0; });

  // Exports.
  await exportSegAndCheck(page, 'cpu');
  const [labelsDl] = await Promise.all([page.waitForEvent('download'), page.click('#export-nifti-labels')]);
  const labelsPath = path.join(ARTIFACTS, 'labels.nii');
  await labelsDl.saveAs(labelsPath);
  const lab = fs.readFileSync(labelsPath);
  const labValues = new Set();
  for (let i = 352; i + 4 <= lab.length; i += 4) labValues.add(lab.readFloatLE(i));
  check(lab.readInt32LE(0) === 348 && lab.readInt16LE(42) === 484 && lab.readInt16LE(44) === 484 && [...labValues].sort().join(',') === '0,1,2',
    "the 'NIfTI labels' button writes the series' label map (labels 1 and 2 for the two segments)", JSON.stringify([...labValues]));
  const [png] = await Promise.all([page.waitForEvent('download'), page.click('#export-png')]);
  const pngPath = path.join(ARTIFACTS, 'frame.png');
  await png.saveAs(pngPath);
  check(fs.readFileSync(pngPath).subarray(1, 4).toString() === 'PNG', 'PNG export');
  const [nii] = await Promise.all([page.waitForEvent('download'), page.click('#export-nifti')]);
  const niiPath = path.join(ARTIFACTS, 'series.nii');
  await nii.saveAs(niiPath);
  const hdr = fs.readFileSync(niiPath);
  check(hdr.readInt32LE(0) === 348 && hdr.readInt16LE(42) === 484 && hdr.readInt16LE(44) === 484, 'NIfTI export (348-byte header, 484x484)');
  const spans = await page.evaluate(() => window.app.spans);
  check(['read', 'decode', 'preprocess', 'encode', 'decode_mask', 'write'].every((n) => spans[n] >= 0),
    "the library's spans reach the page as progress events (as `medfm -v` prints them)", JSON.stringify(spans));

  // Stack scroll on a multi-frame file opened with the picker.
  await page.setInputFiles('#file-input', path.join(ROOT, 'tests/data/emri_small.dcm'));
  await page.waitForFunction(() => window.app.series.length === 3);
  await page.evaluate(() => document.querySelector('#series-list li[data-series="2"]').click());
  await page.waitForFunction(() => window.app.cur.series === 2);
  const frame = () => page.evaluate(() => window.app.cur.frame);
  await page.keyboard.press('ArrowDown');
  await page.waitForFunction(() => window.app.cur.frame === 1);
  check((await frame()) === 1, 'Down goes to the next frame');
  await page.keyboard.press('End');
  await page.waitForFunction(() => window.app.cur.frame === 9);
  check((await frame()) === 9, 'End goes to the last frame (10 frames)');
  await page.keyboard.press('ArrowUp');
  await page.waitForFunction(() => window.app.cur.frame === 8);
  check((await frame()) === 8, 'Up goes back');
  await page.keyboard.press('Home');
  await page.waitForFunction(() => window.app.cur.frame === 0);
  await page.mouse.move(r.x + 320, r.y + 320);
  await page.mouse.wheel(0, 120);
  await page.waitForFunction(() => window.app.cur.frame === 1);
  check((await frame()) === 1, 'the wheel scrolls the stack');

  // Drag-and-drop of a file, and a non-DICOM file: a clear error, nothing lost.
  const ct = fs.readFileSync(path.join(ROOT, 'tests/data/CT_small.dcm')).toString('base64');
  await page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'dropped_ct.dcm'));
    dt.items.add(new File([new TextEncoder().encode('not a dicom file')], 'notes.txt'));
    document.getElementById('viewport').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, ct);
  await page.waitForFunction(() => window.app.errors.some((e) => e.includes('notes.txt')), null, { timeout: 30000 });
  const status = await page.textContent('#status');
  check(/notes\.txt: .*DICM/.test(status), 'a non-DICOM file is reported by name with the reason', status);
  check((await page.evaluate(() => window.app.series.length)) === 3, 'the dropped CT joins its series; the others are kept');

  // The JS API directly.
  const api = await page.evaluate(async (box) => {
    const r = await window.medfm.segment({ series: 0, frame: 0, box });
    return { len: r.mask.length, rows: r.rows, cols: r.cols, area: r.area, sum: r.mask.reduce((a, b) => a + b, 0), backend: r.backend };
  }, KIDNEY);
  check(api.len === 484 * 484 && api.sum === api.area && api.backend === 'cpu', 'medfm.segment() returns {mask, rows, cols, area, backend}', JSON.stringify(api));
  const bad = await page.evaluate(() => window.medfm.segment({ series: 0, frame: 0, box: [10, 10, 5, 5] }).then(() => 'resolved', (e) => `${e.code}: ${e.message}`));
  check(/^bad-input: .*empty/.test(bad), 'a bad box is rejected with a reason and code bad-input', bad);
  const badPrecision = await page.evaluate(async () => {
    const code = await window.medfm.setBackend('cpu', 'int3').then(() => 'resolved', (e) => `${e.code}: ${e.message}`);
    const still = await window.medfm.segment({ series: 0, frame: 0, box: [110, 280, 190, 355] });
    return { code, precision: window.medfm.precision, area: still.area };
  });
  check(/^bad-input: .*int3/.test(badPrecision.code) && badPrecision.precision === 'int8' && badPrecision.area > 0,
    'an unknown precision is refused by the engine (code bad-input) and the loaded model stays', JSON.stringify(badPrecision));
  const noSeries = await page.evaluate(() => window.medfm.render({ series: 99 }).then(() => 'resolved', (e) => e.code));
  check(noSeries === 'bad-input', 'an unknown series is refused with code bad-input', noSeries);
  const badLabel = await page.evaluate(() => window.medfm.segment({ series: 0, frame: 0, points: [[150, 318, 0.7]] }).then(() => 'resolved', (e) => e.message));
  check(/point label 0.7: use 1 \(foreground\) or 0 \(background\)/.test(badLabel), 'a point label other than 0 or 1 is refused (as by the CLI)', badLabel);
  const emb = await page.evaluate(async () => {
    const v = await window.medfm.embed({ series: 0, frame: 0 });
    return { n: v.length, norm: Math.sqrt(v.reduce((a, x) => a + x * x, 0)) };
  });
  check(emb.n === 256 && Math.abs(emb.norm - 1) < 1e-4, 'medfm.embed() gives a 256-d unit vector');

  // Similar panel: embed every loaded frame (progress), then the neighbours of a frame of
  // the 10-frame Enhanced MR are listed with thumbnails, and clicking one opens it.
  await page.evaluate(() => document.querySelector('#series-list li[data-series="2"]').click());
  await page.waitForFunction(() => window.app.cur.series === 2);
  await page.click('#embed-all');
  await page.waitForFunction(() => window.app.similar && window.app.similar.length === 5, null, { timeout: 600000, polling: 500 });
  const sim = await page.evaluate(() => ({ list: window.app.similar, thumbs: document.querySelectorAll('#similar li canvas').length, done: document.getElementById('embed-progress').value }));
  check(sim.thumbs === 5 && sim.done >= 12, 'Similar: every frame embedded (progress), top 5 listed with thumbnails', JSON.stringify(sim));
  check(sim.list[0].series === 2, 'Similar: the nearest frame of an Enhanced MR frame is in the same series', JSON.stringify(sim.list[0]));
  await page.click('#similar li >> nth=0');
  await page.waitForFunction((f) => window.app.cur.frame === f, sim.list[0].frame);
  check(true, 'clicking a neighbour opens it');

  // The pydicom reference table in wasm: every transfer syntax of tests/data/decode
  // (JPEG 2000 and HTJ2K through openjp2 and the libc shim) decodes as natively.
  // The display-pipeline files of tests/data/lut (Modality LUT Sequence, Enhanced per-frame
  // rescale, segmented palette, planar configuration 1) join the table with their
  // modality or RGB values.
  const decodeRef = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests/data/decode/reference.json'), 'utf8'))
    .map((e) => ({ ...e, dir: 'tests/data/decode' }));
  const lutRef = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests/data/lut/reference.json'), 'utf8'))
    .map((e) => ({ file: e.file, dir: 'tests/data/lut', frames: e.frames.length, frame_stats: e.frames.map((f) => f.modality || f.rgb) }));
  const reference = [...decodeRef, ...lutRef];
  const files = Object.fromEntries(reference.map((e) => [e.file, fs.readFileSync(path.join(ROOT, e.dir, e.file)).toString('base64')]));
  const table = await page.evaluate(async ({ reference, files }) => {
    const rows = [];
    for (const e of reference) {
      const bytes = Uint8Array.from(atob(files[e.file]), (c) => c.charCodeAt(0));
      const list = await window.medfm.open([new File([bytes], e.file)]);
      if (list.errors.length) { rows.push({ file: e.file, error: list.errors[0].error, code: list.errors[0].code }); continue; }
      // The frames of the image just opened (the highest image id), wherever its series is.
      const { id, s } = window.lastOpened();
      const mine = window.medfm.series[s].refs.map((r, i) => [r, i]).filter(([r]) => r[0] === id).map(([, i]) => i);
      let worst = 0;
      const windows = [];
      try {
        for (let f = 0; f < e.frames; f++) {
          const px = await window.medfm.pixels({ series: s, frame: mine[f] });
          e.frame_stats[f].positions.forEach((p, i) => { worst = Math.max(worst, Math.abs(px.values[p] - e.frame_stats[f].values[i])); });
          windows.push(px.window || null);
        }
        rows.push({ file: e.file, worst, windows });
      } catch (err) {
        rows.push({ file: e.file, error: err.message, code: err.code });
      }
    }
    return rows;
  }, { reference, files });
  const refused = { 'MR_small_jpeg_ls_lossless.dcm': 'JPEG-LS' };
  const tol = { 'SC_rgb_jpeg_dcmtk.dcm': 4, 'JPGExtended.dcm': 1, 'emri_small_jpeg12.dcm': 1 };
  // A refused encoding is its own kind ('unsupported', as the CLI's exit 6), not bad input.
  const badRows = table.filter((r) => (refused[r.file] ? !(r.error || '').includes(refused[r.file]) || r.code !== 'unsupported' : r.error || r.worst > (tol[r.file] || 1e-3)));
  // Enhanced MR: every frame carries its own window (Frame VOI LUT functional group).
  const enh = table.find((r) => r.file === 'emri_enhanced.dcm');
  check(enh && JSON.stringify(enh.windows) === JSON.stringify([0, 1, 2, 3, 4].map((f) => [300 + 50 * f, 500 + 100 * f])),
    'per-frame windows of an Enhanced MR reach the viewer', JSON.stringify(enh && enh.windows));
  check(badRows.length === 0, `wasm decodes the ${table.length} reference files as pydicom (JPEG 2000, HTJ2K, RLE, deflate, 1/32-bit, 12-bit JPEG, modality LUT tables, per-frame rescale, palettes; JPEG-LS refused as unsupported, with the reason)`, JSON.stringify(badRows));

  await seriesOrderParity(page);
  await displayParity(page);
  await propagationChecks(page);

  // Hostile input in the viewer: a file claiming 2^28 frames (2 bytes of pixels) is refused
  // with the reason when read; the page stays responsive and keeps what was open.
  const bomb = fs.readFileSync(path.join(ROOT, 'tests/data/bad/frames_2e28.dcm')).toString('base64');
  const seriesBefore = await page.evaluate(() => window.medfm.series.length);
  const tBomb = Date.now();
  await page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'frames_2e28.dcm'));
    document.getElementById('viewport').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, bomb);
  await page.waitForFunction(() => window.app.errors.some((e) => e.includes('frames_2e28.dcm')), null, { timeout: 30000 });
  const bombStatus = await page.textContent('#status');
  check(/frames_2e28\.dcm: .*NumberOfFrames/.test(bombStatus), 'a file claiming 2^28 frames is refused with the reason', bombStatus);
  const alive = await page.evaluate(() => [1 + 1, window.medfm.series.length]);
  check(alive[0] === 2 && alive[1] === seriesBefore && Date.now() - tBomb < 30000, 'the page stays responsive and keeps its series', JSON.stringify(alive));

  // An unusable CT window (width 0): the default window is used and the result says so.
  const ctw = fs.readFileSync(path.join(ROOT, 'tests/data/window/ct_width_0.dcm')).toString('base64');
  const warned = await page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const list = await window.medfm.open([new File([bytes], 'ct_width_0.dcm')]);
    if (list.errors.length) return { error: list.errors[0].error };
    const { id, s } = window.lastOpened();
    const f = window.medfm.series[s].refs.findIndex((r) => r[0] === id);
    const r = await window.medfm.segment({ series: s, frame: f, box: [30, 30, 100, 100] });
    return { warnings: r.warnings, area: r.area };
  }, ctw);
  check(warned.warnings && warned.warnings.length === 1 && /default window 40\/400/.test(warned.warnings[0]) && warned.area > 0,
    'a CT with WindowWidth 0 is segmented with the default window and the result warns', JSON.stringify(warned));

  // DICOM by URL (as from a same-origin WADO proxy): loaded, never cached; the caller's
  // ArrayBuffer stays usable; a URL that redirects is refused.
  const byUrl = await page.evaluate(async () => {
    const a = await window.medfm.open('x.dcm?id=A');
    const buf = await (await fetch('samples/head_ct.dcm')).arrayBuffer();
    const b = await window.medfm.open(buf);
    const away = await window.medfm.open('away.dcm');
    return { a: a.errors, b: b.errors, bufLen: buf.byteLength, away: away.errors.map((e) => e.error) };
  });
  check(byUrl.a.length === 0 && byUrl.b.length === 0, 'MedFM.open() takes a same-origin URL and an ArrayBuffer', JSON.stringify(byUrl));
  check(byUrl.bufLen > 0, "MedFM.open(ArrayBuffer) leaves the caller's buffer usable (not detached)", String(byUrl.bufLen));
  check(byUrl.away.length === 1 && /redirects elsewhere/.test(byUrl.away[0]), 'a URL that redirects is refused', JSON.stringify(byUrl.away));
  // The redirect points at a second local server (another origin): it must see nothing.
  // (Chromium's network events name the redirect's target even when it is not followed;
  // the trap server is what shows that no request went there.)
  check(trap.hits.length === 0, 'nothing reached the origin the redirect pointed to', JSON.stringify(trap.hits));
  log.splice(0, log.length, ...log.filter((r) => !r.url.startsWith(trap.url)));

  checkEgress(log, url, initialDone, 'cpu, work (no CSP)');
  check(log.some((r) => r.url.endsWith('.bpk')), 'the recorder sees the worker\'s requests (weights download)');
  check(!log.panics, 'no panic in page or worker', JSON.stringify(log.panics));
  check(!log.pageErrors, 'no uncaught page error', JSON.stringify(log.pageErrors));

  // A panic inside the engine (as a GPU driver problem would cause) is survived: the
  // next call runs on a fresh CPU worker with the files reopened.
  const crash = await page.evaluate(() => window.medfm.panicForTest().then(() => 'resolved', (e) => e.message));
  check(/unreachable|panic/i.test(crash), 'the test panic surfaces as a rejected call', crash);
  const again = await page.evaluate(async (box) => {
    const r = await window.medfm.segment({ series: 0, frame: 0, box });
    return { area: r.area, backend: r.backend, panics: window.medfm.panics, fallback: window.medfm.info.fallback };
  }, KIDNEY);
  check(again.area === res.area && again.backend === 'cpu' && again.panics === 1, 'after a panic the engine restarts on the CPU and gives the same mask', JSON.stringify(again));
  checkEgress(log, url, initialDone, 'cpu, panic recovery (no CSP)');

  // Second visit: the weights come from the Cache API, not the network.
  const log2 = [];
  recordRequests(page, log2);
  const t2 = Date.now();
  await page.goto(`${url}?backend=cpu`);
  await waitReady(page, 600000);
  check(!log2.some((r) => r.url.endsWith('.bpk')), 'second visit: weights from the cache (no .bpk request)');
  check(/cache/.test(await page.textContent('#timings')), 'second visit: the timings say the weights were cached');
  checkEgress(log2, url, t2, 'cpu, second visit (no CSP)');
  check(log2.some((r) => r.sw) || log.some((r) => r.sw), 'the recorder sees the service worker\'s own requests');

  // Offline: with the server gone, the app still starts and segments (service worker +
  // weights cache); a DICOM URL opened before (x.dcm?id=A) was not kept, so another one
  // (?id=B) fails with a clear error instead of being answered with A; no cache holds a
  // DICOM but the bundled samples.
  await page.evaluate(() => navigator.serviceWorker.ready);
  check(await page.evaluate(() => navigator.serviceWorker.controller !== null), 'the service worker controls the page');
  server.close();
  const t3 = Date.now();
  await page.reload();
  await waitReady(page, 600000);
  const offline = await page.evaluate(async (box) => (await window.medfm.segment({ series: 0, frame: 0, box })).area, KIDNEY);
  check(offline === res.area, 'offline (server stopped): the app starts and gives the same mask', String(offline));
  const other = await page.evaluate(async () => (await window.medfm.open('x.dcm?id=B')).errors.map((e) => e.error));
  check(other.length === 1 && /cannot load .*x\.dcm\?id=B/.test(other[0]), 'offline, a DICOM URL not loaded before fails with a clear error', JSON.stringify(other));
  const cached = await cachedUrls(page);
  const kept = Object.values(cached).flat().filter((u) => /\.dcm/.test(u) && !u.startsWith('/samples/'));
  check(kept.length === 0, 'no cache holds a DICOM of the user (only the bundled samples)', JSON.stringify(cached));
  check(Object.keys(cached).every((n) => n === 'medfm-weights-v1' || /^medfm-app-[0-9a-f]{16}$/.test(n)), 'caches: the weights and this build\'s app shell only', JSON.stringify(Object.keys(cached)));
  checkEgress(log2, url, t3, 'cpu, offline (no CSP)');
  await context.close();
}

// A server whose weights file is not the one this build pins (here the fp32 file where
// the int8 one belongs: stale or swapped weights): refused with both hashes, nothing
// cached, and the app says so.
async function foreignWeightsPath(browser) {
  console.log('Weights file not matching the pinned hash');
  const fp32 = fs.readFileSync(path.join(DIST, 'weights/lite_medsam_fp32.bpk'));
  const server = await serve(DIST, { files: { '/weights/lite_medsam_int8.bpk': fp32 } });
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`${server.url}?backend=cpu`);
    let error = '';
    try {
      await waitReady(page, 120000);
    } catch (e) {
      error = e.message;
    }
    check(/sha256 [0-9a-f]{64} is not the int8 weights this build of medfm runs/.test(error), 'a weights file other than the pinned one is refused with the reason', error);
    const cached = await cachedUrls(page);
    check(!Object.values(cached).flat().some((u) => u.endsWith('.bpk')), 'the refused weights are not cached', JSON.stringify(cached));
  } finally {
    await context.close();
    server.close();
  }
}

async function webgpuPath(browser, url) {
  console.log('WebGPU path (SwiftShader)');
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 820 } });
  const page = await context.newPage();
  const log = [];
  recordRequests(page, log);
  // 'auto' passes SwiftShader over (a software adapter: the CPU path is faster) and says
  // why; ?backend=webgpu forces it.
  const tAuto = Date.now();
  await page.goto(url);
  await waitReady(page, 600000);
  const auto = await page.evaluate(() => [window.medfm.info, document.getElementById('status').textContent]);
  check(auto[0].backend === 'cpu' && auto[0].software === true && /software|fallback/.test(auto[0].fallback || ''),
    'auto runs on the CPU on a software WebGPU adapter (SwiftShader), with the reason', JSON.stringify(auto[0]));
  check(/WebGPU not used/.test(auto[1]), 'the status line says why WebGPU is not used', auto[1]);
  checkEgress(log, url, tAuto, 'webgpu, auto start (CSP on)');
  const t0 = Date.now();
  await page.goto(`${url}?backend=webgpu`);
  await waitReady(page, 1200000);
  const initialDone = Date.now();
  console.log(`  ready in ${((initialDone - t0) / 1000).toFixed(1)} s; timings: ${await page.textContent('#timings')}`);
  const info = await page.evaluate(() => window.medfm.info);
  check(info.backend === 'webgpu', '?backend=webgpu runs on the WebGPU adapter', JSON.stringify(info));
  // Headless Chromium creates a WebGPU device but cannot present to a canvas, so the
  // display falls back to 2D here; it must say why. (The WGSL itself is tested natively.)
  const disp = await page.evaluate(() => [window.app.display.kind, window.app.display.gpuError || '']);
  console.log(`  display: ${disp[0]}${disp[1] ? ` (WebGPU display: ${disp[1]})` : ''}`);
  check(disp[0] === 'webgpu' || disp[1].length > 0, 'display through WebGPU, or a 2D fallback with its reason');
  const res = await segmentKidney(page, 'webgpu');
  check(res.backend === 'webgpu', 'mask computed on the webgpu backend');
  await page.screenshot({ path: path.join(ARTIFACTS, 'viewer_webgpu.png') });
  await clickImage(page, 150, 318);
  await idle(page, 1200000);
  const dec = await page.evaluate(() => window.app.lastResult);
  console.log(`  webgpu decode after a point: ${dec.ms.toFixed(0)} ms`);
  await exportSegAndCheck(page, 'webgpu');
  checkEgress(log, url, t0, 'webgpu (CSP on)', initialDone);
  check(!log.panics, 'no panic in page or worker', JSON.stringify(log.panics));
  check((await page.evaluate(() => window.medfm.panics)) === 0, 'the engine never crashed');
  await context.close();
}

// ---------- PACS (issue 22): a real Orthanc with its DICOMweb plugin ----------
const BRAIN_DIR = path.join(ROOT, 'tests/data/series/brain11');
const BRAIN_BOX = [45, 60, 215, 240];

// A CORS-enabled front of the PACS on another origin (as nginx adds CORS in front of
// Orthanc, which has none): preflights answered, `allowOrigin` allowed.
function corsFront(target, allowOrigin) {
  const cors = {
    'access-control-allow-origin': allowOrigin,
    'access-control-allow-headers': 'authorization, content-type, accept',
    'access-control-allow-methods': 'GET, POST',
    vary: 'origin',
  };
  const srv = http.createServer((req, res) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...cors, 'access-control-max-age': '60' }).end();
      return;
    }
    forward(req, res, target, cors, 120); // a slow link, as for the proxy
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({
    url: `http://127.0.0.1:${srv.address().port}`, close: () => { srv.close(); srv.closeAllConnections(); },
  })));
}

// A DICOM attribute of a file, by dcmdump (dcmtk).
function dicomValue(file, tag) {
  const out = execFileSync('dcmdump', ['+P', tag, file], { encoding: 'utf8' });
  const m = out.match(/\[([^\]]*)\]/);
  if (!m) throw new Error(`${file} has no ${tag}`);
  return m[1];
}

// The panel's whole workflow against `pacsUrl` (the DICOMweb root as the user types it):
// search by PatientID, the study's series, open (first slice on screen before the last
// arrives), a box on a retrieved slice (the mask of `medfm segment` on the local file),
// Save to PACS after the confirmation naming the server; Orthanc then holds the SEG.
async function pacsWorkflow(page, label, pacsUrl, orthanc, log) {
  const start = path.join(BRAIN_DIR, 'brain_010.dcm');
  const study = dicomValue(start, '0020,000d');
  const seriesUid = dicomValue(start, '0020,000e');
  const startUid = dicomValue(start, '0008,0018');
  const dialogs = [];
  page.on('dialog', async (d) => {
    dialogs.push({ t: Date.now(), message: d.message() });
    await d.accept();
  });
  await page.click('#pacs-panel summary');
  await page.fill('#pacs-url', pacsUrl);
  await page.fill('#pacs-user', PACS_USER);
  await page.fill('#pacs-secret', PACS_PASSWORD);
  await page.fill('#pacs-patient-id', dicomValue(start, '0010,0020'));
  await page.click('#pacs-search');
  await page.waitForSelector('#pacs-studies li', { timeout: 60000 });
  const studies = await page.$$eval('#pacs-studies li', (l) => l.map((x) => x.dataset.uid));
  check(studies.length === 1 && studies[0] === study, `${label}: the panel finds the study by PatientID`, JSON.stringify(studies));
  await page.click('#pacs-studies li');
  await page.waitForSelector('#pacs-series li', { timeout: 60000 });
  const listed = await page.$$eval('#pacs-series li', (l) => l.map((x) => [x.dataset.uid, x.textContent]));
  // (The MR series; a SEG saved by an earlier pass is listed too.)
  const mr = listed.filter((x) => x[0] === seriesUid);
  const others = listed.filter((x) => x[0] !== seriesUid);
  check(mr.length === 1 && /11 images/.test(mr[0][1]) && others.every((x) => /SEG/.test(x[1])), `${label}: the study's series listed with its image count`, JSON.stringify(listed));
  await page.click(`#pacs-series li[data-uid="${seriesUid}"]`);
  await page.waitForFunction(() => window.app.lastRetrieve, null, { timeout: 120000, polling: 200 });
  await idle(page);
  const got = await page.evaluate((uid) => {
    const s = window.app.series.find((x) => x.uid === uid);
    return { r: window.app.lastRetrieve, frames: s && s.frames, index: s && s.index, status: document.getElementById('status').textContent };
  }, seriesUid);
  console.log(`  ${label}: ${got.r.instances} images, ${(got.r.bytes / 1e6).toFixed(2)} MB in ${got.r.ms.toFixed(0)} ms, first slice on screen at ${got.r.firstSliceMs && got.r.firstSliceMs.toFixed(0)} ms`);
  check(got.r.instances === 11 && got.frames === 11 && !got.r.stopped, `${label}: the series retrieved and opened (11 slices)`, JSON.stringify(got));
  check(got.r.firstSliceMs > 0 && got.r.firstSliceMs < got.r.ms, `${label}: the first slice was on screen before the last one arrived`, JSON.stringify(got.r));
  // A box on the retrieved brain_010: the mask of `medfm segment` on the local file.
  const frame = await page.evaluate(([s, uid]) => window.app.series[s] && window.medfm.series[s].refs.findIndex((_, f) => window.medfm.meta({ series: s, frame: f }).sop_instance_uid === uid), [got.index, startUid]);
  await page.evaluate(([s, f]) => window.app.showFrame(s, f), [got.index, frame]);
  await page.evaluate(() => { window.app.lastResult = null; });
  await page.keyboard.press('s');
  await drawBox(page, BRAIN_BOX);
  await page.waitForFunction(() => window.app.lastResult !== null, null, { timeout: 600000, polling: 500 });
  await idle(page);
  const res = await page.evaluate((key) => ({ ...window.app.lastResult, box: window.app.segments[window.app.active].prompts.get(key).box }), `${got.index}:${frame}`);
  const precision = await page.evaluate(() => window.medfm.info.precision);
  const cli = JSON.parse(execFileSync(process.env.MEDFM_BIN, ['segment', start, '--box', res.box.join(','), '--cpu', '--precision', precision, '--json', '--out', path.join(ARTIFACTS, 'pacs_ref.png')], { encoding: 'utf8' }));
  check(res.area === cli.area, `${label}: a box on the retrieved slice gives the mask of medfm segment on the local file`, `${res.area} vs ${cli.area}`);
  // Save to PACS: a confirmation naming the server first, then one STOW-RS request.
  const tSave = Date.now();
  await page.evaluate(() => { window.app.lastStore = null; });
  await page.click('#save-pacs');
  await page.waitForFunction(() => window.app.lastStore || /Save to PACS failed/.test(document.getElementById('status').textContent), null, { timeout: 120000, polling: 200 });
  const stored = await page.evaluate(() => [window.app.lastStore, document.getElementById('status').textContent]);
  check(dialogs.length === 1 && dialogs[0].message.includes(new URL(pacsUrl, page.url()).href.replace(/\/$/, '')), `${label}: Save to PACS asks first, naming the server`, JSON.stringify(dialogs));
  check(stored[0] && stored[0].instances.length === 1 && stored[0].instances[0].status === 'success', `${label}: the SEG was stored`, JSON.stringify(stored));
  if (stored[0]) {
    const uid = stored[0].instances[0].uid;
    const found = await orthancRequest(orthanc.base, 'GET', `/dicom-web/studies/${study}/series?Modality=SEG`);
    const lookup = await orthancRequest(orthanc.base, 'POST', '/tools/lookup', uid);
    check(found.status === 200 && JSON.parse(found.body).length >= 1 && JSON.parse(lookup.body).some((x) => x.Type === 'Instance'),
      `${label}: Orthanc holds the SEG (QIDO Modality=SEG finds it; its SOPInstanceUID is there)`, `${found.status} ${lookup.body}`);
  }
  // The panel lists the study's series again, the new SEG among them.
  const segListed = await page.$$eval('#pacs-series li', (l) => l.map((x) => x.textContent)).then((l) => l.filter((x) => /^SEG/.test(x)));
  check(segListed.length >= 1, `${label}: after saving, the panel lists the SEG in the study`, JSON.stringify(segListed));
  await page.screenshot({ path: path.join(ARTIFACTS, `pacs_${label.replace(/\W+/g, '_')}.png`) });
  // The only request with a body: the STOW-RS POST, after the confirmation.
  const stowUrl = `${new URL(pacsUrl, page.url()).href.replace(/\/$/, '')}/studies`;
  // (The page and the context both report a worker's request: one Request object.)
  const bodies = [...new Map(log.filter((r) => r.t >= tSave - 1 && (r.method !== 'GET' || (r.body && r.body.length))).map((r) => [r.request, r])).values()];
  check(bodies.length === 1 && bodies[0].url === stowUrl && bodies[0].method === 'POST' && dialogs.length === 1 && bodies[0].t >= dialogs[0].t,
    `${label}: the only request with a body is the STOW-RS POST to the PACS, after the confirmation`, JSON.stringify(bodies.map((r) => `${r.method} ${r.url}`)));
  const before = log.filter((r) => r.t < tSave - 1 && (r.method !== 'GET' || (r.body && r.body.length)) && !r.url.endsWith('.bpk'));
  check(before.length === 0, `${label}: nothing with a body before Save to PACS`, JSON.stringify(before.map((r) => `${r.method} ${r.url}`)));
  const cached = Object.values(await cachedUrls(page)).flat().filter((u) => /dicom-web|studies/.test(u));
  check(cached.length === 0, `${label}: no cache holds a retrieved image or answer`, JSON.stringify(cached));
  const kept = await page.evaluate(() => localStorage.getItem('medfm-pacs'));
  check(kept && !kept.includes(PACS_PASSWORD) && !/user|secret/.test(kept), `${label}: the browser remembers the server only (no credentials unless asked)`, kept);
  check(!log.csp, `${label}: no Content-Security-Policy violation`, JSON.stringify(log.csp));
  check(!log.panics && !log.pageErrors, `${label}: no panic or page error`, JSON.stringify([log.panics, log.pageErrors]));
  return { study, seriesUid };
}

async function pacsPath(browser) {
  console.log('PACS path (Orthanc + DICOMweb: same-origin proxy, then CORS)');
  const orthanc = await startOrthanc(fs.readdirSync(BRAIN_DIR).filter((x) => x.endsWith('.dcm')).sort().map((f) => path.join(BRAIN_DIR, f)));
  const servers = [];
  try {
    // 1. Behind the app's own server as a same-origin reverse proxy (the CSP as shipped:
    // connect-src 'self'); the answers come slowly (a throttled link) so the first slice
    // is shown before the series has arrived.
    const proxied = await serve(DIST, { proxy: { '/dicom-web': { target: orthanc.base, throttleMs: 120 } } });
    servers.push(proxied);
    let context = await browser.newContext({ viewport: { width: 1400, height: 820 } });
    let page = await context.newPage();
    let log = [];
    recordRequests(page, log);
    await page.goto(`${proxied.url}?backend=cpu`);
    await waitReady(page, 600000);
    const { study, seriesUid } = await pacsWorkflow(page, 'same-origin proxy', '/dicom-web', orthanc, log);
    const foreign = log.filter((r) => !r.url.startsWith(proxied.url) && !/^(blob|data):/.test(r.url));
    check(foreign.length === 0, 'same-origin proxy: every request goes to the app\'s origin', JSON.stringify(foreign.map((r) => r.url)));
    // Errors the panel shows: wrong credentials, a PACS the policy does not allow.
    const panelError = async (fill) => {
      await page.evaluate(() => { document.getElementById('status').textContent = ''; });
      for (const [sel, v] of fill) await page.fill(sel, v);
      await page.click('#pacs-search');
      await page.waitForFunction(() => document.getElementById('status').classList.contains('error') && /failed/.test(document.getElementById('status').textContent), null, { timeout: 60000 })
        .catch(() => {});
      return page.textContent('#status');
    };
    const e401 = await panelError([['#pacs-secret', 'wrong']]);
    check(/HTTP 401/.test(e401) && /\/dicom-web\/studies/.test(e401) && !e401.includes('wrong'), 'wrong credentials: the status and path, not the password', e401);
    const eCsp = await panelError([['#pacs-secret', PACS_PASSWORD], ['#pacs-url', 'http://127.0.0.1:9/dicom-web']]);
    check(/Content-Security-Policy/.test(eCsp) && /configured/.test(eCsp), 'a PACS of an origin the policy does not allow: refused with what to do', eCsp);
    // JS API: cancel a retrieve after its first image (what arrived stays open).
    const cancelled = await page.evaluate(async ([auth, st, se]) => {
      const ctl = new AbortController();
      const seen = [];
      const r = await window.medfm.open({ dicomweb: { url: '/dicom-web', headers: { Authorization: auth }, study: st, series: se }, signal: ctl.signal, onProgress: (p) => { seen.push(p.instances); ctl.abort(); } });
      return { retrieved: r.retrieved, seen };
    }, [PACS_AUTH, study, seriesUid]);
    check(cancelled.retrieved.stopped === 'cancelled' && cancelled.retrieved.instances < 11, 'open({dicomweb}) with signal.abort(): the transfer stops', JSON.stringify(cancelled));
    // A study that is not there: the server's 404 with the path.
    const missing = await page.evaluate(async (auth) => window.medfm.open({ dicomweb: { url: '/dicom-web', headers: { Authorization: auth }, study: '1.2.3.4' } }).then(() => 'opened', (e) => `${e.code}: ${e.message}`), PACS_AUTH);
    check(/^bad-input: GET \/dicom-web\/studies\/1\.2\.3\.4: HTTP 404/.test(missing), 'a missing study: HTTP 404 with the path', missing);
    await context.close();

    // 2. A CORS-enabled PACS on another origin, the app configured for it by
    // scripts/configure_pacs.sh (config.json, connect-src 'self' + that origin).
    const dist2 = fs.mkdtempSync(path.join(os.tmpdir(), 'medfm-dist-pacs-'));
    fs.cpSync(DIST, dist2, { recursive: true });
    const port = await freePort();
    const front = await corsFront(orthanc.base, `http://127.0.0.1:${port}`);
    servers.push(front);
    execFileSync('bash', [path.join(ROOT, 'scripts/configure_pacs.sh'), dist2, `${front.url}/dicom-web`], { encoding: 'utf8' });
    const app3 = await serve(dist2, { port });
    servers.push(app3);
    context = await browser.newContext({ viewport: { width: 1400, height: 820 } });
    page = await context.newPage();
    log = [];
    recordRequests(page, log);
    await page.goto(`${app3.url}?backend=cpu`);
    await waitReady(page, 600000);
    const prefilled = await page.inputValue('#pacs-url');
    check(prefilled === `${front.url}/dicom-web`, 'CORS: the panel starts with the configured PACS (config.json)', prefilled);
    await pacsWorkflow(page, 'CORS', `${front.url}/dicom-web`, orthanc, log);
    const elsewhere = log.filter((r) => !r.url.startsWith(app3.url) && !r.url.startsWith(`${front.url}/dicom-web/`) && !/^(blob|data):/.test(r.url));
    check(elsewhere.length === 0, 'CORS: requests go to the app and the configured PACS only', JSON.stringify(elsewhere.map((r) => r.url)));
    // The PACS down: a clear error.
    front.close();
    const down = await page.evaluate(async (url) => window.medfm.searchStudies({ dicomweb: { url } }).then(() => 'found', (e) => `${e.code}: ${e.message}`), `${front.url}/dicom-web`);
    check(/^io: GET \/dicom-web\/studies: the server could not be reached/.test(down), 'a PACS that is down: a clear error', down);
    await context.close();
    fs.rmSync(dist2, { recursive: true, force: true });
  } finally {
    for (const s of servers) s.close();
    orthanc.stop();
  }
}

// A server on another port (another origin) that records what reaches it.
function trapServer() {
  const hits = [];
  const srv = http.createServer((req, res) => {
    hits.push(req.url);
    res.writeHead(404).end();
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({
    url: `http://127.0.0.1:${srv.address().port}/`, hits, close: () => { srv.close(); srv.closeAllConnections(); },
  })));
}

// The test server's own path check (no browser needed).
{
  const root = '/srv/dist';
  const cases = [['/www/app.js', '/srv/dist/www/app.js'], ['/', '/srv/dist'], ['/../dist-other/x', null],
    ['/..%2Fdist-other/x', null], ['/%2e%2e/etc/passwd', null], ['/%E0%A4%A', null], ['/a%00b', null]];
  const bad = cases.filter(([p, want]) => resolvePath(root, p) !== want);
  check(bad.length === 0, 'serve.mjs refuses paths out of its folder and malformed escapes', JSON.stringify(bad));
}

const browser = await launch();
try {
  // One server per path: the CPU path ends by stopping its server (offline check).
  if (WHICH === 'cpu' || WHICH === 'all') {
    // No CSP at all (the code itself must make no foreign request), gzip-encoded weights
    // (Content-Length is then the compressed size), a DICOM URL and a redirect away.
    const trap = await trapServer();
    const server = await serve(DIST, {
      csp: false,
      gzip: true,
      files: { '/x.dcm': fs.readFileSync(path.join(ROOT, 'tests/data/MR_small.dcm')) },
      redirects: { '/away.dcm': `${trap.url}x.dcm` },
    });
    try {
      await cpuPath(browser, server.url, server, trap);
    } finally {
      server.close();
      trap.close();
    }
    await foreignWeightsPath(browser);
  }
  if (WHICH === 'pacs' || WHICH === 'all') {
    await pacsPath(browser);
  }
  if (WHICH === 'webgpu' || WHICH === 'all') {
    const server = await serve(DIST);
    try {
      await webgpuPath(browser, server.url);
    } finally {
      server.close();
    }
  }
} catch (e) {
  check(false, 'the browser test ran to its end', e.stack || String(e));
} finally {
  await browser.close();
}
console.log(failed() ? `${failed()} browser check(s) failed` : 'all browser checks passed');
process.exit(failed() ? 1 : 0);
