// medfm/ohif in a real OHIF (issue 35, item 4): the published viewer build (`@ohif/app`
// from npm ships dist/; building OHIF from source needs a 24 GB Node heap) served as a
// deployment would, with medfm's extension and mode added to its app-config.js as ES-module
// URLs of the packed tarball's files (OHIF imports any name it does not bundle), its default
// DICOMweb data source pointed at a real Orthanc (through the site's reverse proxy, which adds
// the PACS credentials), driven in headless Chromium (CPU-wasm):
//
//   node tests/browser/ohif.mjs [--tgz FILE] [--artifacts DIR] [--docs]
//
// - the 48-slice lung CT (tests/data/ct-lung1) opens in medfm's mode (`/medfm?StudyInstanceUIDs=`);
// - on the tumour slice, the "medfm box" toolbar button, a real mouse drag and Enter: the
//   labelmap read back through Cornerstone3D equals `medfm segment` on that file and the box
//   the tool reports (IoU >= 0.99, int8);
// - "medfm propagate" carries that box through the series: the labelmap's slices equal
//   `medfm segment --propagate` from that slice (Dice >= 0.99);
// - "medfm export SEG" downloads a SEG that dciodvfy passes with no error and highdicom reads
//   back as the labelmap, referencing the study's instances under the patient's own ID;
// - every request stays on the site's origin; a screenshot of the viewport with the labelmap
//   drawn is kept (and copied to docs/ with --docs).
//
// Env: MEDFM_BIN (the native binary, for the reference masks), MEDFM_WEB_DIST (the web build
// to pack from, as package.mjs), MEDFM_OHIF (the @ohif/app version, default 3.13.2),
// MEDFM_OHIF_CACHE (where its tarball is kept, default ~/.cache/medfm/ohif), CHROMIUM,
// CHECK_PYTHON (a Python with highdicom).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ARTIFACTS, ROOT, check, flag, iou, launch, referenceMask, run, runTest, tarball } from './harness.mjs';
import { CT_FILES, TUMOUR_BOX, TUMOUR_FILE, checkSeg, dense, dicomValue, pageHelpers, referencePropagation, stackDice } from './lung.mjs';
import { PACS_AUTH, startOrthanc } from './orthanc.mjs';
import { serve } from './serve.mjs';

const OHIF = process.env.MEDFM_OHIF || '3.13.2';
const OHIF_CACHE = process.env.MEDFM_OHIF_CACHE || path.join(os.homedir(), '.cache/medfm/ohif');
// What the site sends: OHIF's needs (its inline boot script and styles, its codecs' wasm, blob
// workers, data: images) and medfm's (wasm compiled from its own origin): nothing leaves it.
const POLICY = "default-src 'self'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
  + "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self' blob: data:";

/** The published OHIF viewer build (dist/ of @ohif/app), fetched once with `npm pack`. */
function ohifDist() {
  const dir = path.join(OHIF_CACHE, OHIF);
  const dist = path.join(dir, 'package/dist');
  if (!fs.existsSync(path.join(dist, 'index.html'))) {
    fs.mkdirSync(dir, { recursive: true });
    const tgz = run('npm', ['pack', '--silent', `@ohif/app@${OHIF}`], dir).trim().split('\n').pop();
    run('tar', ['xzf', tgz], dir);
    fs.rmSync(path.join(dir, tgz));
  }
  return dist;
}

/** OHIF's app-config.js for this site: medfm's extension and mode (the three lines of
 * npm/README.md), the DICOMweb data source at the site's own /dicom-web. */
function appConfig() {
  return `window.config = {
  routerBasename: null,
  extensions: ['/medfm/ohif.js'],
  modes: ['/medfm/ohif-mode.js'],
  showStudyList: true,
  maxNumberOfWebWorkers: 1,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'orthanc',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'orthanc',
    configuration: {
      friendlyName: 'Orthanc', name: 'orthanc',
      wadoUriRoot: '/dicom-web', qidoRoot: '/dicom-web', wadoRoot: '/dicom-web',
      qidoSupportsIncludeField: false, imageRendering: 'wadors', thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true, supportsFuzzyMatching: false, supportsWildcard: true,
      omitQuotationForMultipartRequest: true, bulkDataURI: { enabled: true },
    },
  }],
};
`;
}

// The viewport's state through OHIF's own Cornerstone3D (window.cornerstone): its image ids,
// the current one, and the SOP Instance UID of each.
const viewportState = () => {
  const engine = window.cornerstone?.getRenderingEngines?.()[0];
  const vp = engine?.getViewports?.().find((v) => v.getImageIds?.().length);
  if (!vp) return null;
  const ids = vp.getImageIds();
  const sop = (id) => window.cornerstone.metaData.get('sopCommonModule', id)?.sopInstanceUID;
  return { count: ids.length, current: vp.getCurrentImageIdIndex(), uids: ids.map(sop) };
};

// The labelmap of the viewport's stack (lung.mjs's readLabelmap, sparse): the segmentation
// medfm's controller writes.
const labelmapState = () => {
  const vp = window.cornerstone.getRenderingEngines()[0].getViewports().find((v) => v.getImageIds?.().length);
  const { controller } = window.extensionManager.getModuleEntry('medfm.utilityModule.medfm').exports.get();
  return window.medfmPage.readLabelmap({ cache: window.cornerstone.cache, segmentation: window.cornerstoneTools.segmentation, viewport: vp, segmentationId: controller.segmentationId });
};

// Show stack image `i` in the viewport (asked again each call until it is there); true
// once it is, with its image in the cache.
const showImage = (i) => {
  const vp = window.cornerstone.getRenderingEngines()[0].getViewports().find((v) => v.getImageIds?.().length);
  if (vp.getCurrentImageIdIndex() !== i) {
    vp.setImageIdIndex(i).catch(() => {});
    return null;
  }
  return window.cornerstone.cache.getImage(vp.getCurrentImageId()) ? true : null;
};

// Page coordinates of an image pixel on the viewport.
const pagePoint = (p) => {
  const vp = window.cornerstone.getRenderingEngines()[0].getViewports().find((v) => v.getImageIds?.().length);
  return window.medfmPage.pagePoint({ viewport: vp, utilities: window.cornerstone.utilities }, p);
};

async function waitFor(page, fn, arg, what, ms = 120000) {
  const t0 = Date.now();
  for (;;) {
    const v = await page.evaluate(fn, arg).catch(() => null);
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await page.waitForTimeout(250);
  }
}

async function main() {
  if (!process.env.MEDFM_BIN) throw new Error('MEDFM_BIN is not set (path of the native medfm binary)');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'medfm-ohif-'));
  const tgz = tarball(work);
  const dist = ohifDist();
  // The site: OHIF's build, its app-config.js, and the medfm package under /medfm/.
  const site = path.join(work, 'site');
  fs.cpSync(dist, site, { recursive: true });
  run('tar', ['xzf', tgz, '-C', work], ROOT);
  fs.renameSync(path.join(work, 'package'), path.join(site, 'medfm'));
  fs.writeFileSync(path.join(site, 'app-config.js'), appConfig());

  const study = dicomValue(TUMOUR_FILE, '0020,000d');
  const tumourUid = dicomValue(TUMOUR_FILE, '0008,0018');
  const orthanc = await startOrthanc(CT_FILES);
  const server = await serve(site, { csp: POLICY, fallback: 'index.html', proxy: { '/dicom-web': { target: orthanc.base, headers: { authorization: PACS_AUTH } } } });
  const origin = server.url.replace(/\/$/, '');
  // The viewport draws with WebGL, on SwiftShader here.
  const browser = await launch(['--use-angle=swiftshader', '--enable-unsafe-swiftshader']);
  try {
    const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    const requests = [];
    const errors = [];
    const consoleLog = [];
    context.on('request', (r) => requests.push(r.url()));
    context.on('requestfailed', (r) => errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {
      consoleLog.push(`${m.type()}: ${m.text()}`);
      if (m.type() === 'error') errors.push(m.text());
      if (/Content Security Policy/.test(m.text())) errors.push(`CSP: ${m.text()}`);
    });

    // The page-side helpers, as window.medfmTest in every document of the page.
    await page.addInitScript(`${pageHelpers} window.medfmTest = { viewportState: ${viewportState}, labelmapState: ${labelmapState}, pagePoint: ${pagePoint} };`);
    await page.goto(`${server.url}medfm?StudyInstanceUIDs=${study}`);
    const state = await waitFor(page, () => {
      const s = window.medfmTest.viewportState();
      return s && s.count === 48 ? s : null;
    }, null, 'the CT series in a stack viewport', Number(process.env.MEDFM_OHIF_LOAD_S || 180) * 1000).catch(async (e) => {
      await page.screenshot({ path: path.join(ARTIFACTS, 'ohif_failed_load.png') });
      throw new Error(`${e.message}; page errors: ${errors.slice(0, 8).join(' | ')}; console: ${consoleLog.slice(-15).join(' | ')}`);
    });
    check(state.count === 48, `medfm's mode shows the 48-slice CT from Orthanc in a stack viewport`);
    const tumourIndex = state.uids.indexOf(tumourUid);
    check(tumourIndex >= 0, `the tumour slice ${path.basename(TUMOUR_FILE)} is in the stack (at ${tumourIndex})`);
    // To the tumour slice; asked again while OHIF is still setting its viewport up (on a
    // loaded machine its own first image can come after ours, or the viewport be replaced).
    await waitFor(page, showImage, tumourIndex, 'the tumour slice on screen');
    // And still there a moment later (nothing of OHIF's set-up pending moves it again).
    await page.waitForTimeout(1000);
    await waitFor(page, showImage, tumourIndex, 'the tumour slice on screen');

    // The box tool, from its toolbar button, then a real drag.
    await page.click('[data-cy="MedfmBox"]');
    const at = (p) => page.evaluate((q) => window.medfmTest.pagePoint(q), p);
    const [p0, p1] = [await at(TUMOUR_BOX.slice(0, 2)), await at(TUMOUR_BOX.slice(2))];
    const segmented = page.evaluate(() => new Promise((resolve) => {
      const vp = window.cornerstone.getRenderingEngines()[0].getViewports().find((v) => v.getImageIds?.().length);
      vp.element.addEventListener('medfm-segmented', (e) => resolve({ ok: true, box: e.detail.box, area: e.detail.area }), { once: true });
      vp.element.addEventListener('medfm-error', (e) => resolve({ ok: false, error: e.detail.message }), { once: true });
    }));
    await page.mouse.move(...p0);
    await page.mouse.down();
    await page.mouse.move(...p1, { steps: 10 });
    await page.mouse.up();
    const got = await Promise.race([segmented, page.waitForTimeout(180000).then(() => ({ ok: false, error: 'no answer in 180 s' }))]);
    check(got.ok, `a drag with the medfm box over the tumour segments it (box ${JSON.stringify(got.box)}, ${got.area} pixels)`, got.error || '');
    if (!got.ok) return;
    const within = got.box.every((v, i) => Math.abs(v - TUMOUR_BOX[i]) <= 1);
    check(within, 'the tool reports the dragged box within 1 px', JSON.stringify(got.box));
    await page.keyboard.press('Enter');
    const accepted = await page.evaluate(() => window.extensionManager.getModuleEntry('medfm.utilityModule.medfm').exports.get().controller.preview === null);
    check(accepted, 'Enter accepts the preview');
    const ref = referenceMask(TUMOUR_FILE, got.box, path.join(ARTIFACTS, 'ohif_ref_mask.png'));
    const lm = (await page.evaluate(() => window.medfmTest.labelmapState()))?.map(dense) || [];
    const slice = lm[tumourIndex];
    const sliceIou = slice ? iou(slice, ref.mask) : 0;
    check(slice && sliceIou >= 0.99, `the labelmap on the tumour slice equals medfm segment's mask (IoU ${sliceIou.toFixed(4)} >= 0.99, ${ref.area} pixels)`);
    const elsewhere = lm.filter((s, i) => i !== tumourIndex && s && s.some((v) => v)).length;
    check(elsewhere === 0, 'no other slice of the labelmap is touched by the box', String(elsewhere));
    const shot = path.join(ARTIFACTS, 'ohif_viewport.png');
    await page.locator('.cornerstone-viewport-element, [data-viewportid]').first().screenshot({ path: shot }).catch(() => page.screenshot({ path: shot }));
    if (flag('docs')) fs.copyFileSync(shot, path.join(ROOT, 'docs/ohif_labelmap.png'));

    // Propagation from the toolbar: the last box through the series.
    const reference = referencePropagation(got.box, 'ohif');
    await page.click('[data-cy="MedfmPropagate"]');
    // Done when its notification says where it stopped.
    await page.getByText(/\d+ slices, stopped /).first().waitFor({ timeout: 300000 });
    const lm3 = (await page.evaluate(() => window.medfmTest.labelmapState()))?.map(dense) || [];
    const d = stackDice(lm3, state.uids, reference);
    check(d >= 0.99, `"medfm propagate" fills the labelmap as medfm segment --propagate (${reference.size} slices, Dice ${d.toFixed(4)} >= 0.99)`);
    await page.keyboard.press('Enter');

    // Export: the labelmap as a SEG from medfm's writer.
    const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 120000 }), page.click('[data-cy="MedfmExportSeg"]')]);
    const segPath = path.join(ARTIFACTS, 'ohif_seg.dcm');
    await dl.saveAs(segPath);
    checkSeg(segPath, lm3, state.uids, 'ohif');

    const foreign = requests.filter((u) => !u.startsWith(origin) && !u.startsWith('blob:') && !u.startsWith('data:'));
    check(foreign.length === 0, `every request goes to the site's origin ${origin}`, JSON.stringify(foreign.slice(0, 10)));
    const csp = errors.filter((e) => e.startsWith('CSP'));
    check(csp.length === 0, 'no Content-Security-Policy violation', JSON.stringify(csp.slice(0, 5)));
    await context.close();
  } finally {
    await browser.close();
    server.close();
    orthanc.stop();
  }
}

await runTest('the OHIF test', 'all OHIF checks passed', main);
