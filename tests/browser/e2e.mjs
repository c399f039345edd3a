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
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { ARTIFACTS, ROOT, check, failed, launch, opt } from './harness.mjs';
import { resolvePath, serve } from './serve.mjs';
import {
  KIDNEY, MR, cachedUrls, checkEgress, clickImage, drawBox, exportSegAndCheck, idle, recordRequests, segmentKidney, waitReady,
} from './app_page.mjs';
import { pacsPath } from './e2e_pacs.mjs';
import { displayParity, propagationChecks, seriesOrderParity } from './e2e_series.mjs';

const DIST = path.resolve(opt('dist', path.join(ROOT, 'dist')));
const WHICH = opt('path', 'all');

async function cpuPath(browser, url, server, trap) {
  console.log('CPU path (forced CPU)');
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 820 } });
  const page = await context.newPage();
  const log = [];
  recordRequests(page, log);
  const t0 = Date.now();
  await page.goto(`${url}?backend=cpu`);
  await waitReady(page, 600000);
  // The image opened last (the highest image id), whether its series lists it or an
  // earlier copy of its instance (several fixtures are encodings of one instance), and
  // its frames' pixels and rendering by its own id: what each file decodes to.
  await page.evaluate(() => {
    window.lastOpened = () => Math.max(...window.medfm.metas.keys());
    window.imageFrame = (id, frame, op = 'frame', args = {}) => window.medfm._call(op, { id, frame, ...args });
    window.seriesOf = (id) => window.medfm.series.findIndex((x) => x.refs.some((r) => r[0] === id) || x.copies.includes(id));
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
      // The frames of the image just opened, in the file's order.
      const id = window.lastOpened();
      let worst = 0;
      const windows = [];
      try {
        for (let f = 0; f < e.frames; f++) {
          const px = await window.imageFrame(id, f);
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
    // By its id: CT_small.dcm, opened before, is the same instance with another window.
    const r = await window.imageFrame(window.lastOpened(), 0, 'segment', { request: { box: [30, 30, 100, 100] } });
    return { warnings: r.warnings, area: r.area };
  }, ctw);
  check(warned.warnings && warned.warnings.length === 1 && /default window 40\/400/.test(warned.warnings[0]) && warned.area > 0,
    'a CT with WindowWidth 0 is segmented with the default window and the result warns', JSON.stringify(warned));

  // DICOM by URL (as from a same-origin WADO proxy): loaded, never cached; the caller's
  // ArrayBuffer stays usable; a URL that redirects is refused.
  const byUrl = await page.evaluate(async () => {
    const a = await window.medfm.open('x.dcm?id=A');
    const buf = await (await fetch('samples/head_ct.dcm')).arrayBuffer();
    const frames = () => window.medfm.list().map((s) => s.frames);
    const before = frames();
    // A bundled sample, open since the start, again: its series, each instance once.
    const b = await window.medfm.open(buf);
    const reopened = { before, after: frames(), b: b.map((s) => ({ frames: s.frames, warnings: s.warnings })) };
    const away = await window.medfm.open('away.dcm');
    return { a: a.errors, b: b.errors, bufLen: buf.byteLength, away: away.errors.map((e) => e.error), reopened };
  });
  const { reopened } = byUrl;
  check(reopened.b.length === 1 && JSON.stringify(reopened.before) === JSON.stringify(reopened.after) && reopened.b[0].warnings.some((w) => /given more than once/.test(w)),
    'a file opened again: open() gives its series, the instance listed once, with a warning', JSON.stringify(reopened));
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
    await pacsPath(browser, DIST);
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
