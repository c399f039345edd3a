// The example viewer (examples/cornerstone, issue 35 item 5) as an integrator builds it: a
// copy of the folder, the packed tarball installed with npm (no link), `vite build`, the build
// served behind a reverse proxy to a real Orthanc (DICOMweb plugin) holding the 48-slice lung
// CT, driven in headless Chromium (CPU-wasm; the viewport draws with WebGL on SwiftShader):
//
//   node tests/browser/example.mjs [--tgz FILE] [--artifacts DIR]
//
// - the series loads from Orthanc through @cornerstonejs/dicom-image-loader (WADO-RS);
// - on the tumour slice, the Box button and a real mouse drag: the labelmap read back through
//   Cornerstone3D equals `medfm segment` on that file and the tool's box (IoU >= 0.99);
// - Propagate: the labelmap equals `medfm segment --propagate` from that slice (Dice >= 0.99);
// - Export SEG: dciodvfy passes it, highdicom reads it back as the labelmap;
// - the page makes no request outside its own origin (the app and the proxied DICOMweb
//   server) and no POST or PUT: no pixel is sent anywhere; a screenshot of the viewport with
//   the labelmap drawn is kept (and copied to docs/ with --docs).
//
// Env: MEDFM_BIN, MEDFM_WEB_DIST (as package.mjs), CHROMIUM, CHECK_PYTHON.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ARTIFACTS, ROOT, check, flag, iou, launch, referenceMask, run, runTest, tarball } from './harness.mjs';
import { CT_FILES, TUMOUR_BOX, TUMOUR_FILE, checkSeg, dense, dicomValue, pageHelpers, referencePropagation, stackDice } from './lung.mjs';
import { PACS_AUTH, startOrthanc } from './orthanc.mjs';
import { serve } from './serve.mjs';

const EXAMPLE = path.join(ROOT, 'examples/cornerstone');

/** The example copied and built as its README says: npm install of the tarball, then of its own dependencies, vite build. */
function build(work, tgz) {
  const dir = path.join(work, 'example');
  fs.cpSync(EXAMPLE, dir, { recursive: true, filter: (p) => !/node_modules|dist$/.test(p) });
  run('npm', ['install', '--no-audit', '--no-fund', '--silent', tgz], dir);
  run('npm', ['install', '--no-audit', '--no-fund', '--silent'], dir);
  run(path.join(dir, 'node_modules/.bin/vite'), ['build', '--logLevel', 'error'], dir);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  check(/^file:/.test(pkg.dependencies?.medfm || ''), `the example depends on the tarball as npm installed it (${pkg.dependencies?.medfm})`);
  return path.join(dir, 'dist');
}

// The stack's state and labelmap through the page's Cornerstone3D (window.example).
const stackState = () => {
  const { viewport, metaData } = window.example || {};
  if (!viewport) return null;
  const ids = viewport.getImageIds();
  return { count: ids.length, current: viewport.getCurrentImageIdIndex(), uids: ids.map((id) => metaData.get('sopCommonModule', id)?.sopInstanceUID) };
};
const labelmapState = () => window.medfmPage.readLabelmap({ ...window.example, segmentationId: window.example.controller.segmentationId });
const pagePoint = (p) => window.medfmPage.pagePoint(window.example, p);

async function main() {
  if (!process.env.MEDFM_BIN) throw new Error('MEDFM_BIN is not set (path of the native medfm binary)');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'medfm-example-'));
  const site = build(work, tarball(work));
  const study = dicomValue(TUMOUR_FILE, '0020,000d');
  const tumourUid = dicomValue(TUMOUR_FILE, '0008,0018');
  const orthanc = await startOrthanc(CT_FILES);
  const server = await serve(site, { proxy: { '/dicom-web': { target: orthanc.base, headers: { authorization: PACS_AUTH } } } });
  const origin = server.url.replace(/\/$/, '');
  const browser = await launch(['--use-angle=swiftshader', '--enable-unsafe-swiftshader']);
  try {
    const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 900, height: 760 } });
    const page = await context.newPage();
    const requests = [];
    const problems = [];
    context.on('request', (r) => requests.push({ url: r.url(), method: r.method() }));
    page.on('pageerror', (e) => problems.push(String(e)));
    page.on('console', (m) => {
      if (/Content Security Policy/.test(m.text())) problems.push(`CSP: ${m.text()}`);
    });
    await page.addInitScript(`${pageHelpers} window.medfmTest = { stackState: ${stackState}, labelmapState: ${labelmapState}, pagePoint: ${pagePoint} };`);
    await page.goto(`${server.url}?study=${study}&backend=cpu`);
    // The controller's log lines, as the example's listener shows them.
    await page.waitForFunction(() => window.example, null, { timeout: 240000 }).catch(() => null);
    await page.evaluate(() => {
      window.medfmLog = [];
      window.example?.controller.listeners.push((logger, message) => window.medfmLog.push(String(message)));
    });
    await page.waitForFunction(() => document.body.dataset.ready || document.body.dataset.error, null, { timeout: 240000 });
    const error = await page.evaluate(() => document.body.dataset.error);
    check(!error, 'the example loads the study from Orthanc and starts medfm', error || '');
    if (error) return;
    const state = await page.evaluate(() => window.medfmTest.stackState());
    const tumourIndex = state.uids.indexOf(tumourUid);
    check(state.count === 48 && tumourIndex >= 0, `the 48 slices are in the stack, the tumour slice at ${tumourIndex}`);
    // To the tumour slice with the wheel, as a reader scrolls.
    const centre = await page.evaluate(() => {
      const r = window.example.viewport.canvas.getBoundingClientRect();
      return [r.left + r.width / 2, r.top + r.height / 2];
    });
    await page.mouse.move(...centre);
    for (let k = 0; k < 100; k++) {
      const now = await page.evaluate(() => window.example.viewport.getCurrentImageIdIndex());
      if (now === tumourIndex) break;
      await page.mouse.wheel(0, now < tumourIndex ? 100 : -100);
      await page.waitForTimeout(60);
    }
    await page.waitForFunction((i) => window.example.viewport.getCurrentImageIdIndex() === i
      && window.example.cache.getImage(window.example.viewport.getCurrentImageId()), tumourIndex, { timeout: 60000 });
    check(true, 'the wheel scrolls the stack to the tumour slice');

    // Resting there, the slice and its neighbours are encoded ahead (one worker: a box waits
    // for an encode under way, so the drag comes once they are done): the box then costs the
    // decoder only.
    const around = await page.evaluate((i) => [i, i - 1, i + 1].map((k) => window.example.viewport.getImageIds()[k]), tumourIndex);
    const ahead = await page.waitForFunction((ids) => ids.every((id) => window.medfmLog.some((m) => m.includes(`encoded ${id} ahead`))), around, { timeout: 180000 }).then(() => true, () => false);
    check(ahead, 'resting on the tumour slice, the example encodes it and its neighbours ahead (encodeAhead)');
    await page.click('#box');
    const at = (p) => page.evaluate((q) => window.medfmTest.pagePoint(q), p);
    const [p0, p1] = [await at(TUMOUR_BOX.slice(0, 2)), await at(TUMOUR_BOX.slice(2))];
    const answered = page.evaluate(() => new Promise((resolve) => {
      const el = window.example.viewport.element;
      el.addEventListener('medfm-segmented', (e) => resolve({ ok: true, box: e.detail.box, area: e.detail.area }), { once: true });
      el.addEventListener('medfm-error', (e) => resolve({ ok: false, error: e.detail.message }), { once: true });
    }));
    await page.mouse.move(...p0);
    await page.mouse.down();
    await page.mouse.move(...p1, { steps: 10 });
    const released = Date.now();
    await page.mouse.up();
    const got = await answered;
    check(got.ok && got.box.every((v, i) => Math.abs(v - TUMOUR_BOX[i]) <= 1), `a drag over the tumour gives its box (within 1 px) and a mask (${got.area} pixels; ${Date.now() - released} ms from the release to the mask, the slice encoded ahead: a figure, not a bound)`, JSON.stringify(got));
    if (!got.ok) return;
    await page.keyboard.press('Enter');
    const ref = referenceMask(TUMOUR_FILE, got.box, path.join(ARTIFACTS, 'example_ref_mask.png'));
    const slices = (await page.evaluate(() => window.medfmTest.labelmapState()))?.map(dense);
    const score = slices?.[tumourIndex] ? iou(slices[tumourIndex], ref.mask) : 0;
    check(score >= 0.99, `the labelmap on the tumour slice equals medfm segment's mask (IoU ${score.toFixed(4)} >= 0.99)`);
    const shot = path.join(ARTIFACTS, 'example_viewport.png');
    await page.locator('#viewport').screenshot({ path: shot });
    if (flag('docs')) fs.copyFileSync(shot, path.join(ROOT, 'docs/cornerstone_example.png'));

    const reference = referencePropagation(got.box, 'example');
    await page.click('#propagate');
    await page.waitForFunction(() => /slices, stopped|not propagated/.test(document.getElementById('status').textContent), null, { timeout: 300000 });
    const said = await page.evaluate(() => document.getElementById('status').textContent);
    const volume = (await page.evaluate(() => window.medfmTest.labelmapState()))?.map(dense) || [];
    const d = stackDice(volume, state.uids, reference);
    check(d >= 0.99, `Propagate fills the labelmap as medfm segment --propagate (${reference.size} slices; Dice ${d.toFixed(4)} >= 0.99): "${said}"`);
    await page.keyboard.press('Enter');

    const download = page.waitForEvent('download', { timeout: 120000 }).catch(() => null);
    await page.click('#export');
    const dl = await download;
    check(dl, 'Export SEG downloads a file', await page.evaluate(() => document.getElementById('status').textContent));
    if (dl) {
      const segPath = path.join(ARTIFACTS, 'example_seg.dcm');
      await dl.saveAs(segPath);
      checkSeg(segPath, volume, state.uids, 'example');
    }

    const foreign = requests.filter((r) => !r.url.startsWith(origin) && !r.url.startsWith('blob:') && !r.url.startsWith('data:'));
    check(foreign.length === 0, `every request goes to the page's origin ${origin} (the app and the proxied DICOMweb server)`, JSON.stringify(foreign.slice(0, 10)));
    const sent = requests.filter((r) => r.method !== 'GET' && r.method !== 'HEAD');
    check(sent.length === 0, 'no request sends anything (no POST, PUT): no pixel leaves the page', JSON.stringify(sent.slice(0, 10)));
    check(!problems.length, 'no page error and no Content-Security-Policy violation', JSON.stringify(problems.slice(0, 5)));
    await context.close();
  } finally {
    await browser.close();
    server.close();
    orthanc.stop();
  }
}

await runTest('the example viewer test', 'all example viewer checks passed', main);
