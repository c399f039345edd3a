// medfm/cornerstone in a real Cornerstone3D viewer (issue 35, item 3: the controller's
// path): the packed tarball and Cornerstone3D 5.x (core, tools, dicom-image-loader)
// installed with npm into a fresh Vite 8 project, built with no configuration, served
// under the app's Content-Security-Policy, driven in headless Chromium (CPU-wasm; the
// viewport draws with WebGL on SwiftShader):
//
//   node tests/browser/cornerstone.mjs [--tgz FILE] [--artifacts DIR]
//
// - a stack viewport shows the MR file (wadouri, same origin), the reader's VOI set far
//   from the file's window; the controller segments the kidney box: the labelmap read
//   back through Cornerstone3D's cache equals `medfm segment` on the same file and box
//   (IoU >= 0.999, int8): the model input is the image's, not the display's;
// - rejectPreview() leaves the labelmap as it was (empty), acceptPreview() keeps the mask;
// - a box outside the image, a colour image and a labelmap of another size than the image
//   are rejected with code 'bad-input', the labelmaps unchanged, and the controller
//   segments again afterwards;
// - a stack of the brain MR series, shown at brain_009: propagate() with the box and an
//   extent of 2 keeps the slices of `medfm segment --propagate` on the same files and
//   writes labelmaps equal to its label volume (Dice >= 0.99); rejectPreview() empties them;
// - the tool (MedfmSegmentationTool, registered in a tool group on the primary button):
//   a real mouse drag over the kidney is drawn as it goes and gives its box (within 1 px)
//   and medfm segment's mask for that box in the labelmap; Escape rejects it, Enter
//   accepts it; a click adds an
//   include point and a Shift-click an exclude point, each replacing the preview with
//   medfm segment's mask for the box and the points so far;
// - the model-loading events carry @cornerstonejs/ai's names; every request stays on the
//   page's origin; a screenshot of the viewport with the labelmap drawn is kept;
// - interpolateScroll() carries the box to the next image of the brain stack: medfm
//   segment's mask there; nothing at the stack's end or without a prompt;
// - a typed use of the subpath export type-checks against its declarations (tsc --strict).
//
// Env: MEDFM_BIN (the native binary, for the reference mask), MEDFM_WEB_DIST (the web
// build to pack from, as package.mjs), CHROMIUM, MEDFM_VITE, MEDFM_CORNERSTONE (default
// 5.14.0): the versions installed.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ARTIFACTS, ROOT, check, failed, iou, launch, referenceMask as cliMask, run, tarball } from './harness.mjs';
import { csp, serve } from './serve.mjs';

const MR = path.join(ROOT, 'tests/data/MR-SIEMENS-DICOM-WithOverlays.dcm');
const COLOUR = path.join(ROOT, 'tests/data/examples_ybr_color.dcm');
const KIDNEY = [110, 280, 190, 355];
const BRAIN_DIR = path.join(ROOT, 'tests/data/series/brain11');
const BRAIN_FILES = fs.readdirSync(BRAIN_DIR).filter((f) => f.endsWith('.dcm')).sort();
const BRAIN_START = 'brain_009.dcm';
const BRAIN_BOX = [45, 60, 215, 240];
const BRAIN_EXTENT = 2;
const VITE = process.env.MEDFM_VITE || '8.4.1';
const CORNERSTONE = process.env.MEDFM_CORNERSTONE || '5.14.0';
const TYPESCRIPT = process.env.MEDFM_TYPESCRIPT || '5.9.3';

// `medfm segment --propagate` from the start slice with the box and extent: the SOP
// instance UIDs in series order, the slices kept, and the label volume (0/1, slice-major,
// from its NIfTI: float32 in the series order, as `medfm convert` writes volumes).
function referencePropagation() {
  const bin = process.env.MEDFM_BIN;
  const nii = path.join(ARTIFACTS, 'cornerstone_ref_propagation.nii');
  const out = JSON.parse(execFileSync(bin, ['segment', path.join(BRAIN_DIR, BRAIN_START), '--propagate', '--extent', String(BRAIN_EXTENT),
    '--box', BRAIN_BOX.join(','), '--cpu', '--precision', 'int8', '--json', '--out', nii], { encoding: 'utf8' }));
  const bytes = fs.readFileSync(nii);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getInt16(70, true) !== 16) throw new Error('the reference label volume is not float32');
  const offset = view.getFloat32(108, true);
  const n = view.getInt16(42, true) * view.getInt16(44, true) * view.getInt16(46, true);
  const volume = new Uint8Array(n);
  for (let i = 0; i < n; i++) volume[i] = view.getFloat32(offset + 4 * i, true) > 0 ? 1 : 0;
  return { volume, kept: out.slices.map((sl) => sl.index).sort((x, y) => x - y), slices: out.slices };
}

// The integrator's page: Cornerstone3D set up as its docs do, one stack viewport, the
// controller; test hooks on window.
const MAIN = `import { RenderingEngine, Enums, init as csInit, cache, eventTarget, imageLoader, metaData, utilities } from '@cornerstonejs/core';
import { init as dicomInit } from '@cornerstonejs/dicom-image-loader';
import { init as toolsInit, segmentation, addTool, ToolGroupManager, Enums as ToolsEnums } from '@cornerstonejs/tools';
import { MedfmSegmentationController, MedfmSegmentationTool, Events } from 'medfm/cornerstone';

const events = [];
for (const name of Object.values(Events)) eventTarget.addEventListener(name, () => events.push(name));

async function start() {
  await csInit();
  dicomInit({ maxWebWorkers: 1 });
  toolsInit();
  // Sized from script: the policy (style-src 'self') refuses inline style attributes.
  const element = document.getElementById('stack');
  Object.assign(element.style, { width: '512px', height: '512px' });
  const engine = new RenderingEngine('engine');
  engine.enableElement({ viewportId: 'stack', type: Enums.ViewportType.STACK, element });
  const viewport = engine.getViewport('stack');
  const imageId = 'wadouri:' + location.origin + '/mr.dcm';
  await viewport.setStack([imageId]);
  // The reader's display window, far from the file's: the model input must not follow it.
  viewport.setProperties({ voiRange: { lower: 0, upper: 120 } });
  viewport.render();
  const controller = new MedfmSegmentationController({ medfm: { backend: 'cpu' } });
  controller.initViewport(viewport);
  const labelmap = (id) => Array.from(cache.getImage(id).voxelManager.getScalarData());
  // A series as a stack (the brain MR), shown at its start slice, for the propagation.
  const brainElement = document.getElementById('brain');
  Object.assign(brainElement.style, { width: '256px', height: '256px' });
  engine.enableElement({ viewportId: 'brain', type: Enums.ViewportType.STACK, element: brainElement });
  const brainViewport = engine.getViewport('brain');
  const brainIds = BRAIN.map((name) => 'wadouri:' + location.origin + '/brain/' + name);
  await brainViewport.setStack(brainIds, BRAIN_START);
  brainViewport.render();
  const brainController = new MedfmSegmentationController({ fm: await controller.initModel() });
  brainController.initViewport(brainViewport);
  // The labelmap image over an image (the derived images name their source).
  const labelmapOf = (segmentationId, imageId) => {
    const data = segmentation.state.getSegmentation(segmentationId)?.representationData?.Labelmap;
    const ids = data?.imageIds || Object.values(data?.labelmaps || {}).flatMap((layer) => layer.imageIds || []);
    return ids.find((id) => cache.getImage(id)?.referencedImageId === imageId);
  };
  const sops = (ids) => ids.map((id) => metaData.get('sopCommonModule', id)?.sopInstanceUID);
  // The tool, registered as any Cornerstone3D tool, on the primary button of the stack.
  addTool(MedfmSegmentationTool);
  const group = ToolGroupManager.createToolGroup('medfm');
  group.addTool(MedfmSegmentationTool.toolName, { controller });
  group.addViewport('stack', 'engine');
  group.setToolActive(MedfmSegmentationTool.toolName, { bindings: [{ mouseButton: ToolsEnums.MouseBindings.Primary },
    { mouseButton: ToolsEnums.MouseBindings.Primary, modifierKey: ToolsEnums.KeyboardBindings.Shift }] });
  const toolEvents = [];
  element.addEventListener('medfm-segmented', (e) => toolEvents.push({ ok: true, box: e.detail.box, points: e.detail.points, area: e.detail.area, labelmapImageId: e.detail.labelmapImageId, segmentIndex: e.detail.segmentIndex }));
  element.addEventListener('medfm-error', (e) => toolEvents.push({ ok: false, ...e.detail }));
  // Page coordinates of an image pixel of the stack's image.
  const pageOf = (x, y) => {
    const c = viewport.worldToCanvas(utilities.imageToWorldCoords(imageId, [x, y]));
    const r = element.getBoundingClientRect();
    return [r.left + c[0], r.top + c[1]];
  };
  // The stack image's labelmap emptied (any preview rejected first); the voxels left set.
  const emptyLabelmap = () => {
    controller.rejectPreview();
    const lid = labelmapOf(controller.segmentationId, imageId);
    const voxels = cache.getImage(lid).voxelManager;
    const n = labelmap(lid).length;
    for (let i = 0; i < n; i++) voxels.setAtIndex(i, 0);
    return labelmap(lid).filter((v) => v !== 0).length;
  };
  window.medfmTest = { controller, viewport, cache, imageLoader, segmentation, ToolsEnums, events, labelmap, imageId, brainController, brainViewport, labelmapOf, sops, toolEvents, pageOf, emptyLabelmap };
  document.body.dataset.ready = '1';
}
start().catch((e) => { document.body.dataset.error = String((e && e.stack) || e); });
`;

function makeProject(dir, tgz) {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'medfm-cornerstone-consumer', private: true, type: 'module' }, null, 2));
  fs.writeFileSync(path.join(dir, 'index.html'), `<!doctype html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp(ROOT)}">
<title>medfm in Cornerstone3D</title>
<script type="module" src="/main.js"></script></head>
<body><div id="stack"></div><div id="brain"></div></body></html>
`);
  fs.writeFileSync(path.join(dir, 'main.js'), `const BRAIN = ${JSON.stringify(BRAIN_FILES)};\nconst BRAIN_START = ${BRAIN_FILES.indexOf(BRAIN_START)};\n${MAIN}`);
  // `events`: xmlbuilder2 (under @cornerstonejs/core's metadata) extends Node's
  // EventEmitter, which Vite leaves out of a browser build; the npm package stands in.
  run('npm', ['install', '--no-audit', '--no-fund', '--silent', '--save-exact', tgz, `vite@${VITE}`,
    `@cornerstonejs/core@${CORNERSTONE}`, `@cornerstonejs/tools@${CORNERSTONE}`, `@cornerstonejs/dicom-image-loader@${CORNERSTONE}`, 'events@3.3.0', `typescript@${TYPESCRIPT}`], dir);
  // The declarations: typed use of the subpath export, checked strictly.
  fs.writeFileSync(path.join(dir, 'types.ts'), `import { MedfmSegmentationController, Events, type ControllerSegmentResult, type ViewportLike } from 'medfm/cornerstone';

export async function boxOn(viewport: ViewportLike): Promise<ControllerSegmentResult> {
  const controller = new MedfmSegmentationController({ medfm: { backend: 'cpu' }, voi: 'image' });
  const loaded: string = Events.MODEL_LOADING_COMPLETED;
  console.log(loaded);
  controller.initViewport(viewport);
  const r = await controller.segment({ box: [1, 2, 30, 40], points: [[10, 12, 1]] });
  if (r.area > 0) controller.acceptPreview(); else controller.rejectPreview();
  return r;
}
`);
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'ESNext', moduleResolution: 'bundler', lib: ['ES2022', 'DOM'], strict: true, noEmit: true },
    include: ['types.ts'],
  }, null, 2));
  try {
    run(path.join(dir, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json'], dir);
    check(true, 'a typed use of medfm/cornerstone type-checks against its declarations (tsc --strict)');
  } catch (e) {
    check(false, 'a typed use of medfm/cornerstone type-checks against its declarations', String(e.stdout || e.message));
  }
  run(path.join(dir, 'node_modules/.bin/vite'), ['build', '--logLevel', 'error'], dir);
  return path.join(dir, 'dist');
}

const tgz = tarball(fs.mkdtempSync(path.join(os.tmpdir(), 'medfm-pack-')));
console.log(`Cornerstone3D ${CORNERSTONE} with ${path.basename(tgz)}`);
const project = fs.mkdtempSync(path.join(os.tmpdir(), 'medfm-cornerstone-'));
const site = makeProject(project, tgz);
const ref = cliMask(MR, KIDNEY, path.join(ARTIFACTS, 'cornerstone_ref_mask.png'));
const brainFiles = Object.fromEntries(BRAIN_FILES.map((f) => [`/brain/${f}`, fs.readFileSync(path.join(BRAIN_DIR, f))]));
const server = await serve(site, { files: { '/mr.dcm': fs.readFileSync(MR), '/colour.dcm': fs.readFileSync(COLOUR), ...brainFiles } });
const browser = await launch(['--use-angle=swiftshader', '--enable-unsafe-swiftshader']);
try {
  const page = await browser.newPage({ viewport: { width: 640, height: 600 } });
  const requests = [];
  const problems = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => problems.push(String(e)));
  await page.goto(server.url);
  await page.waitForFunction(() => document.body.dataset.ready || document.body.dataset.error, null, { timeout: 120000 });
  const error = await page.evaluate(() => document.body.dataset.error);
  check(!error, 'Cornerstone3D and medfm/cornerstone start in a Vite build with no configuration', error || '');
  const r = await page.evaluate(async ({ box }) => {
    const { controller, cache, imageLoader, segmentation, ToolsEnums, events, labelmap, imageId } = window.medfmTest;
    const rejected = async (p) => {
      try { await p; return { code: 'resolved' }; } catch (e) { return { code: e.code, message: e.message }; }
    };
    const out = {};
    const first = await controller.segment({ box });
    out.first = { rows: first.rows, cols: first.cols, area: first.area, index: first.segmentIndex, mask: labelmap(first.labelmapImageId).map((v) => (v === first.segmentIndex ? 1 : 0)) };
    out.events = [...events];
    controller.rejectPreview();
    out.afterReject = labelmap(first.labelmapImageId).filter((v) => v !== 0).length;
    const again = await controller.segment({ box });
    controller.acceptPreview();
    controller.rejectPreview();
    out.afterAccept = labelmap(again.labelmapImageId).filter((v) => v === again.segmentIndex).length;
    out.outside = await rejected(controller.segment({ box: [600, 600, 700, 700] }));
    out.afterOutside = labelmap(again.labelmapImageId).filter((v) => v === again.segmentIndex).length;
    // A colour image in the cache: refused before the engine sees it.
    out.colour = await rejected((async () => {
      const id = 'wadouri:' + location.origin + '/colour.dcm';
      await imageLoader.loadAndCacheImage(id);
      return controller.segment({ box, imageId: id });
    })());
    // The integrator's own segmentation whose labelmap over the image is another size.
    out.oddSize = await rejected((async () => {
      imageLoader.createAndCacheLocalImage('medfm-odd-labelmap', { scalarData: new Uint8Array(64 * 64), dimensions: [64, 64], spacing: [1, 1], referencedImageId: imageId });
      segmentation.addSegmentations([{ segmentationId: 'medfm-odd', representation: { type: ToolsEnums.SegmentationRepresentations.Labelmap, data: { imageIds: ['medfm-odd-labelmap'] } } }]);
      const own = controller.segmentationId;
      controller.segmentationId = 'medfm-odd';
      try {
        return await controller.segment({ box });
      } finally {
        controller.segmentationId = own;
      }
    })());
    out.oddLeft = labelmap('medfm-odd-labelmap').filter((v) => v !== 0).length;
    out.last = (await controller.segment({ box: [115, 285, 185, 350] })).area;
    out.labelmapInCache = !!cache.getImage(first.labelmapImageId);
    out.imageId = imageId;
    return out;
  }, { box: KIDNEY });
  const score = iou(Uint8Array.from(r.first.mask), ref.mask);
  console.log(`  kidney: area ${r.first.area} (medfm segment: ${ref.area}), IoU ${score.toFixed(5)}`);
  check(r.first.rows === ref.rows && r.first.cols === ref.cols && score >= 0.999,
    'the labelmap read back through Cornerstone3D equals medfm segment on the same file and box (IoU >= 0.999), with the reader\'s VOI far from the file\'s window', `IoU ${score}`);
  check(['ONNX_MODEL_LOADING_STARTED', 'ONNX_MODEL_COMPONENT_LOADED', 'ONNX_MODEL_LOADING_COMPLETED'].every((e) => r.events.includes(e)),
    'the model-loading events carry @cornerstonejs/ai\'s names', JSON.stringify(r.events));
  check(r.afterReject === 0, 'rejectPreview() leaves the labelmap as it was (empty)', String(r.afterReject));
  check(r.afterAccept === r.first.area, 'acceptPreview() keeps the mask (a later rejectPreview() does not undo it)', `${r.afterAccept} vs ${r.first.area}`);
  check(r.outside.code === 'bad-input' && r.afterOutside === r.afterAccept,
    'a box outside the image: rejected with bad-input, the labelmap unchanged', JSON.stringify(r.outside));
  check(r.colour.code === 'bad-input' && /colour/.test(r.colour.message || ''), 'a colour image: rejected with bad-input, naming why', JSON.stringify(r.colour));
  check(r.oddSize.code === 'bad-input' && /labelmap .* is 64x64, the image \d+x\d+/.test(r.oddSize.message || '') && r.oddLeft === 0,
    'a labelmap of another size than the image: rejected with bad-input naming both sizes, nothing written', JSON.stringify({ ...r.oddSize, left: r.oddLeft }));
  check(r.last > 0, 'the controller segments again after the rejections', String(r.last));
  // The tool with real mouse events: a drag over the kidney, then Escape; again, then Enter.
  const start = await page.evaluate(({ box }) => {
    const { pageOf, emptyLabelmap } = window.medfmTest;
    // An empty labelmap to start from (the kidney accepted above is cleared).
    const left = emptyLabelmap();
    return { from: pageOf(box[0], box[1]), to: pageOf(box[2], box[3]), left };
  }, { box: KIDNEY });
  // The tool's answer to a gesture: its event, the labelmap's mask of that segment.
  const answer = (before, drawn = null) => page.waitForFunction((n) => window.medfmTest.toolEvents.length > n, before, { timeout: 120000 })
    .then(() => page.evaluate((drawnBox) => {
      const { toolEvents, labelmap } = window.medfmTest;
      const e = toolEvents[toolEvents.length - 1];
      const after = document.querySelectorAll('#stack rect[data-id="medfm-box"]').length;
      return { ...e, drawn: drawnBox, drawnAfter: after, mask: e.ok ? labelmap(e.labelmapImageId).map((v) => (v === e.segmentIndex ? 1 : 0)) : [] };
    }, drawn));
  const drag = async () => {
    const before = await page.evaluate(() => window.medfmTest.toolEvents.length);
    await page.mouse.move(start.from[0], start.from[1]);
    await page.mouse.down();
    await page.mouse.move(start.to[0], start.to[1], { steps: 8 });
    // The box as drawn while the button is down (on the next animation frame).
    const drawn = await page.waitForFunction(() => {
      const r = document.querySelector('#stack rect[data-id="medfm-box"]')?.getBoundingClientRect();
      return r && r.width > 0 ? [r.left, r.top, r.right, r.bottom] : null;
    }, null, { timeout: 10000 }).then((h) => h.jsonValue(), () => null);
    await page.mouse.up();
    return answer(before, drawn);
  };
  // A click on an image pixel, with Shift for an exclude point.
  const click = async (x, y, shift = false) => {
    const before = await page.evaluate(() => window.medfmTest.toolEvents.length);
    const [px, py] = await page.evaluate(([a, b]) => window.medfmTest.pageOf(a, b), [x, y]);
    if (shift) await page.keyboard.down('Shift');
    await page.mouse.click(px, py);
    if (shift) await page.keyboard.up('Shift');
    return answer(before);
  };
  const count = (e) => page.evaluate((ev) => window.medfmTest.labelmap(ev.labelmapImageId).filter((v) => v === ev.segmentIndex).length, e);
  const base = await page.evaluate(() => {
    const { controller } = window.medfmTest;
    return controller.segmentationId;
  });
  const t1 = await drag();
  check(t1.ok && t1.box.every((v, i) => Math.abs(v - KIDNEY[i]) <= 1), 'the tool: a mouse drag over the kidney gives its box in image pixels (within 1 px)', JSON.stringify({ box: t1.box, error: t1.message }));
  // The stroke (2 px) sits on the corners: its bounds are the drag's within 2 px.
  const corners = [start.from[0], start.from[1], start.to[0], start.to[1]];
  check(Array.isArray(t1.drawn) && t1.drawn.every((v, i) => Math.abs(v - corners[i]) <= 2) && t1.drawnAfter === 0,
    'the tool: the box is drawn from the press to the pointer while dragging, and gone after the release', JSON.stringify({ drawn: t1.drawn, corners, after: t1.drawnAfter }));
  if (t1.ok) {
    const toolRef = cliMask(MR, t1.box, path.join(ARTIFACTS, 'cornerstone_ref_mask.png'));
    const toolScore = iou(Uint8Array.from(t1.mask), toolRef.mask);
    check(start.left === 0 && toolScore >= 0.999, 'the tool: the labelmap, empty before, holds medfm segment\'s mask for that box', `IoU ${toolScore}, ${start.left} voxels before`);
  }
  const withPreview = t1.ok ? await count(t1) : -1;
  await page.keyboard.press('Escape');
  const afterEscape = t1.ok ? await count(t1) : -1;
  const t2 = await drag();
  await page.keyboard.press('Enter');
  const accepted = await page.evaluate(() => window.medfmTest.controller.preview === null);
  const afterEnter = t2.ok ? await count(t2) : -1;
  await page.keyboard.press('Escape');
  const afterLateEscape = t2.ok ? await count(t2) : -1;
  check(withPreview > 0 && afterEscape < withPreview && afterEnter === withPreview && accepted && afterLateEscape === afterEnter,
    'the tool: Escape rejects the preview, Enter accepts it (a later Escape keeps it)', JSON.stringify({ base, withPreview, afterEscape, afterEnter, afterLateEscape, accepted }));

  // Points from the tool: a box, then a click (include) and a Shift-click (exclude) each
  // replace the preview with the mask of the box and the points so far, as `medfm segment
  // --box --point` gives it on the file; Escape then leaves the labelmap empty again.
  const emptied = await page.evaluate(() => window.medfmTest.emptyLabelmap());
  const t3 = await drag();
  const INCLUDE = [150, 318];
  const EXCLUDE = [120, 290];
  const p1 = t3.ok ? await click(...INCLUDE) : t3;
  const p2 = p1.ok ? await click(...EXCLUDE, true) : p1;
  const wantPoints = [[...INCLUDE, 1], [...EXCLUDE, 0]];
  // Each point within a pixel of the one clicked (the mouse moves in whole page pixels), with its label.
  const samePoints = (got, want) => Array.isArray(got) && got.length === want.length
    && got.every((q, i) => Math.abs(q[0] - want[i][0]) <= 1 && Math.abs(q[1] - want[i][1]) <= 1 && q[2] === want[i][2]);
  check(p1.ok && p2.ok && samePoints(p1.points, wantPoints.slice(0, 1)) && samePoints(p2.points, wantPoints)
    && JSON.stringify(p2.points[0]) === JSON.stringify(p1.points[0])
    && JSON.stringify(p1.box) === JSON.stringify(t3.box) && JSON.stringify(p2.box) === JSON.stringify(t3.box),
    'the tool: a click adds an include point and a Shift-click an exclude point to the pending box', JSON.stringify({ p1: [p1.box, p1.points, p1.message], p2: [p2.box, p2.points, p2.message] }));
  if (p1.ok && p2.ok) {
    const ref1 = cliMask(MR, t3.box, path.join(ARTIFACTS, 'cornerstone_ref_points1.png'), p1.points);
    const ref2 = cliMask(MR, t3.box, path.join(ARTIFACTS, 'cornerstone_ref_points2.png'), p2.points);
    const s1 = iou(Uint8Array.from(p1.mask), ref1.mask);
    const s2 = iou(Uint8Array.from(p2.mask), ref2.mask);
    const union = ref1.mask.reduce((n, v, i) => n + (v | ref2.mask[i]), 0);
    check(emptied === 0 && s1 >= 0.999 && s2 >= 0.999 && ref1.area !== ref2.area,
      'the tool: after each point the labelmap holds medfm segment\'s mask for the box and the points so far (replaced, not added up)', `IoU ${s1}, ${s2}; areas ${ref1.area}, ${ref2.area} (union ${union})`);
    await page.keyboard.press('Escape');
    const left = await count(p2);
    check(left === 0, 'the tool: Escape after the points leaves the labelmap as it was before the box', String(left));
  }

  // Propagation through the brain stack, against `medfm segment --propagate` on its files.
  const b = await page.evaluate(async ({ box, extent }) => {
    const { brainController, brainViewport, labelmap, labelmapOf, sops } = window.medfmTest;
    const seen = [];
    const r = await brainController.propagate({ box, extent, onProgress: (sl) => seen.push(sl.frame) });
    const ids = brainViewport.getImageIds();
    const masks = ids.map((id) => labelmap(labelmapOf(r.segmentationId, id)).map((v) => (v === r.segmentIndex ? 1 : 0)));
    const startIndex = ids.indexOf(brainViewport.getCurrentImageId());
    brainController.rejectPreview();
    const afterReject = ids.reduce((n, id) => n + labelmap(labelmapOf(r.segmentationId, id)).filter((v) => v !== 0).length, 0);
    return { frames: r.slices.map((sl) => sl.frame), stopped: r.stopped, seen, masks, sops: sops(ids), startIndex, afterReject };
  }, { box: BRAIN_BOX, extent: BRAIN_EXTENT });
  const cli = referencePropagation();
  check(cli.slices.every((sl) => b.sops[sl.index] === sl.sop_instance_uid),
    'the stack\'s images are in the CLI\'s series order (each kept slice the same instance)', JSON.stringify({ page: b.sops, cli: cli.slices.map((sl) => [sl.index, sl.sop_instance_uid]) }));
  check(JSON.stringify([...b.frames].sort((x, y) => x - y)) === JSON.stringify(cli.kept) && b.seen.length === b.frames.length,
    'propagate(): the same slices as medfm segment --propagate, each given to onProgress', JSON.stringify({ page: b.frames, cli: cli.kept }));
  let inter = 0;
  let sum = 0;
  b.masks.forEach((mask, z) => {
    for (let i = 0; i < mask.length; i++) {
      const c = cli.volume[z * mask.length + i];
      inter += mask[i] & c;
      sum += mask[i] + c;
    }
  });
  const dice = sum ? (2 * inter) / sum : 1;
  console.log(`  brain propagation: slices ${JSON.stringify(b.frames)} from ${b.startIndex}, stopped ${b.stopped}, Dice vs medfm segment --propagate ${dice.toFixed(5)}`);
  check(dice >= 0.99, 'propagate(): the labelmaps of the stack equal medfm segment --propagate (Dice >= 0.99 as a volume)', `Dice ${dice}`);
  check(b.afterReject === 0, 'rejectPreview() after propagate(): every slice of the labelmap as it was', String(b.afterReject));

  // interpolateScroll, as @cornerstonejs/ai's: the preview accepted, one image on, the same
  // box segmented there; nothing at the stack's end or without a prompt on the image shown.
  const sc = await page.evaluate(async ({ box }) => {
    const { brainController: c, brainViewport: v, labelmap, labelmapOf } = window.medfmTest;
    const ids = v.getImageIds();
    const start = v.getCurrentImageIdIndex();
    const first = await c.segment({ box });
    const r = await c.interpolateScroll(v, 1);
    const kept = labelmap(labelmapOf(first.segmentationId, first.imageId)).filter((x) => x === first.segmentIndex).length;
    const out = {
      start, at: v.getCurrentImageIdIndex(), imageId: r && r.imageId, want: ids[start + 1], firstArea: first.area, kept,
      mask: r ? labelmap(r.labelmapImageId).map((x) => (x === r.segmentIndex ? 1 : 0)) : [],
    };
    // No prompt on the image shown (another image, not segmented): nothing scrolled.
    await v.setImageIdIndex(start + 3);
    out.noPrompt = await c.interpolateScroll(v, -1);
    out.noPromptAt = v.getCurrentImageIdIndex();
    // At the stack's end: nothing scrolled.
    await v.setImageIdIndex(ids.length - 1);
    await c.segment({ box });
    out.atEnd = await c.interpolateScroll(v, 1);
    out.endAt = v.getCurrentImageIdIndex();
    out.badDir = await c.interpolateScroll(v, 2).then(() => 'resolved', (e) => e.code);
    c.clear();
    await v.setImageIdIndex(start);
    return out;
  }, { box: BRAIN_BOX });
  const nextFile = BRAIN_FILES[sc.start + 1];
  const scrollRef = cliMask(path.join(BRAIN_DIR, nextFile), BRAIN_BOX, path.join(ARTIFACTS, 'cornerstone_ref_scroll.png'));
  const scrollIou = iou(Uint8Array.from(sc.mask), scrollRef.mask);
  check(sc.at === sc.start + 1 && sc.imageId === sc.want && scrollIou >= 0.999 && sc.kept === sc.firstArea,
    `interpolateScroll(): the preview kept, one image on (${nextFile}) the same box gives medfm segment's mask there (IoU >= 0.999)`, JSON.stringify({ ...sc, mask: undefined, iou: scrollIou }));
  check(sc.noPrompt === null && sc.noPromptAt === sc.start + 3 && sc.atEnd === null && sc.endAt === BRAIN_FILES.length - 1 && sc.badDir === 'bad-input',
    'interpolateScroll(): nothing scrolled without a prompt on the image shown or at the stack\'s end; a dir other than 1 or -1 is bad-input', JSON.stringify({ noPrompt: sc.noPrompt, noPromptAt: sc.noPromptAt, atEnd: sc.atEnd, endAt: sc.endAt, badDir: sc.badDir }));

  const foreign = requests.filter((u) => !u.startsWith(server.url) && !u.startsWith('data:') && !u.startsWith('blob:'));
  check(foreign.length === 0, 'every request stays on the page\'s origin', foreign.slice(0, 5).join(' '));
  check(problems.length === 0, 'no page error', problems.slice(0, 3).join(' | '));
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(ARTIFACTS, 'cornerstone_labelmap.png'), clip: { x: 0, y: 0, width: 530, height: 530 } });
  console.log(`  screenshot: ${path.join(ARTIFACTS, 'cornerstone_labelmap.png')}`);
} finally {
  await browser.close();
  server.close();
  fs.rmSync(project, { recursive: true, force: true });
}
process.exit(failed() ? 1 : 0);
