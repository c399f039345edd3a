// Driving the web app's page (dist/, www/app.js) in the browser tests: wait for it, draw
// on it, record and check its requests, export its SEG and read it back; the reference
// mask area of `medfm segment` (MEDFM_BIN) on the bundled MR.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ARTIFACTS, ROOT, check } from './harness.mjs';

export const MR = path.join(ROOT, 'tests/data/MR-SIEMENS-DICOM-WithOverlays.dcm');

export const KIDNEY = [110, 280, 190, 355];

export function referenceArea(box, precision) {
  const bin = process.env.MEDFM_BIN;
  if (!bin) throw new Error('MEDFM_BIN is not set (path of the native medfm binary)');
  const out = execFileSync(bin, ['segment', MR, '--box', box.join(','), '--cpu', '--precision', precision, '--json', '--out', path.join(ARTIFACTS, 'ref_mask.png')], { encoding: 'utf8' });
  return JSON.parse(out).area;
}

// Record every request of the page, its worker and the service worker, and every
// Content-Security-Policy violation (the page's event, and the "Refused to ..." console
// message Chromium prints in the page and in workers).
export function recordRequests(page, log) {
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
export const ALLOWED = new Set([
  '/', '/index.html', '/medfm-wasm.js', '/medfm-wasm_bg.wasm', '/sw.js', '/favicon.ico',
  '/www/app.js', '/www/state.js', '/www/export.js', '/www/pacs.js', '/www/medfm.js', '/www/worker.js',
  '/www/display.js', '/www/app.css',
  '/shaders/display.wgsl', '/samples/index.json', '/samples/abdomen_mr.dcm', '/samples/head_ct.dcm',
  '/weights/lite_medsam_int8.bpk', '/weights/lite_medsam_fp32.bpk',
  // Served by the test as a same-origin DICOM URL (a WADO proxy) and a redirect away.
  '/x.dcm', '/away.dcm',
  // The deployment's settings (absent here: a 404).
  '/config.json',
]);

export async function waitReady(page, timeout) {
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout, polling: 500 });
  const state = await page.evaluate(() => document.body.dataset.ready);
  if (state !== '1') throw new Error(`app failed to start: ${await page.textContent('#status')}`);
}

export async function idle(page, timeout = 600000) {
  await page.waitForFunction(() => window.app.busy === 0, null, { timeout, polling: 200 });
}

// Drag a box over image pixels `box` with the mouse (left button, segment tool).
export async function drawBox(page, box) {
  const [a, b] = await page.evaluate((bx) => [window.app.display.toCanvas(bx[0], bx[1]), window.app.display.toCanvas(bx[2], bx[3])], box);
  const r = await page.locator('#view').boundingBox();
  await page.mouse.move(r.x + a[0], r.y + a[1]);
  await page.mouse.down();
  await page.mouse.move(r.x + (a[0] + b[0]) / 2, r.y + (a[1] + b[1]) / 2, { steps: 3 });
  await page.mouse.move(r.x + b[0], r.y + b[1], { steps: 3 });
  await page.mouse.up();
}

export async function clickImage(page, x, y, modifiers = []) {
  const c = await page.evaluate(([px, py]) => window.app.display.toCanvas(px, py), [x, y]);
  const r = await page.locator('#view').boundingBox();
  for (const m of modifiers) await page.keyboard.down(m);
  await page.mouse.click(r.x + c[0], r.y + c[1]);
  for (const m of modifiers) await page.keyboard.up(m);
}

export async function segmentKidney(page, label) {
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

export async function exportSegAndCheck(page, label) {
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
export function checkEgress(log, origin, since, label, initialDone = since) {
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
export async function cachedUrls(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const name of await caches.keys()) {
      out[name] = (await (await caches.open(name)).keys()).map((r) => new URL(r.url).pathname + new URL(r.url).search);
    }
    return out;
  });
}
