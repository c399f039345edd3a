// medfm in a Cornerstone3D viewer, as an integrator writes it (npm/README.md): a study
// loaded from a DICOMweb server with @cornerstonejs/dicom-image-loader (WADO-RS frames, the
// series' metadata from one request), one stack viewport, and medfm/cornerstone's tool and
// controller: drag a box (click to add points, Shift-click to exclude), Enter accepts,
// Escape rejects; "Propagate" carries the last box through the series into the same
// labelmap; "Export SEG" downloads the labelmap as a DICOM SEG. The model runs in the page
// (CPU-wasm or WebGPU): no pixel leaves it.
//
//   npm install ../path/to/medfm-0.1.0.tgz && npm install && npx vite build
//   open /?study=<StudyInstanceUID>[&dicomweb=/dicom-web][&backend=cpu|webgpu|auto]
//
// The DICOMweb server is reached on the page's own origin (a reverse proxy in front of the
// PACS, as OHIF deployments do), so the policy in index.html allows no other.
import { Enums, RenderingEngine, cache, init as csInit, metaData, utilities } from '@cornerstonejs/core';
import { init as dicomInit, wadors } from '@cornerstonejs/dicom-image-loader';
import { Enums as ToolsEnums, StackScrollTool, ToolGroupManager, addTool, segmentation, init as toolsInit } from '@cornerstonejs/tools';
import { MedfmSegmentationController, MedfmSegmentationTool } from 'medfm/cornerstone';

const params = new URLSearchParams(location.search);
const ROOT = params.get('dicomweb') || '/dicom-web';
const STUDY = params.get('study');
const status = (text) => {
  document.getElementById('status').textContent = text;
};

const value = (dataset, tag) => dataset[tag]?.Value?.[0];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];

async function dicomJson(url) {
  const r = await fetch(url, { headers: { accept: 'application/dicom+json' } });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

/** The study's first image series as WADO-RS image ids (metadata registered with the
 * loader), in slice order: position along the normal. */
async function seriesImageIds(study) {
  const series = await dicomJson(`${ROOT}/studies/${study}/series`);
  const images = series.find((s) => !['SEG', 'SR', 'PR', 'RTSTRUCT', 'KO'].includes(value(s, '00080060')));
  if (!images) throw new Error(`study ${study} has no image series`);
  const seriesUid = value(images, '0020000E');
  const instances = await dicomJson(`${ROOT}/studies/${study}/series/${seriesUid}/metadata`);
  const ids = instances.map((instance) => {
    const sop = value(instance, '00080018');
    const imageId = `wadors:${location.origin}${ROOT}/studies/${study}/series/${seriesUid}/instances/${sop}/frames/1`;
    wadors.metaDataManager.add(imageId, instance);
    return imageId;
  });
  const along = (id) => {
    const plane = metaData.get('imagePlaneModule', id);
    return plane?.imagePositionPatient ? dot(plane.imagePositionPatient, cross(plane.rowCosines, plane.columnCosines)) : 0;
  };
  return ids.sort((a, b) => along(a) - along(b));
}

async function start() {
  if (!STUDY) throw new Error('open this page with ?study=<StudyInstanceUID>');
  await csInit();
  dicomInit({ maxWebWorkers: 1 });
  toolsInit();
  const element = document.getElementById('viewport');
  const engine = new RenderingEngine('medfm-example');
  engine.enableElement({ viewportId: 'ct', type: Enums.ViewportType.STACK, element });
  const viewport = engine.getViewport('ct');

  const controller = new MedfmSegmentationController({
    medfm: { backend: params.get('backend') || 'auto' },
    listeners: [(logger, message) => status(message)],
  });
  // The model loads while the series does.
  const model = controller.initModel();
  const imageIds = await seriesImageIds(STUDY);
  status(`${imageIds.length} images`);
  await viewport.setStack(imageIds, Math.floor(imageIds.length / 2));
  viewport.render();
  controller.initViewport(viewport);
  // The slice the reader rests on and its neighbours are encoded in the background: a box
  // there answers in the decoder's time.
  controller.encodeAhead();

  addTool(MedfmSegmentationTool);
  addTool(StackScrollTool);
  const group = ToolGroupManager.createToolGroup('medfm');
  group.addTool(MedfmSegmentationTool.toolName, { controller });
  group.addTool(StackScrollTool.toolName);
  group.addViewport('ct', 'medfm-example');
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: ToolsEnums.MouseBindings.Wheel }] });
  const box = document.getElementById('box');
  box.addEventListener('click', () => {
    group.setToolActive(MedfmSegmentationTool.toolName, { bindings: [
      { mouseButton: ToolsEnums.MouseBindings.Primary },
      { mouseButton: ToolsEnums.MouseBindings.Primary, modifierKey: ToolsEnums.KeyboardBindings.Shift },
    ] });
    box.classList.add('active');
  });
  element.addEventListener('medfm-segmented', (e) => status(`${e.detail.area} pixels (IoU ${e.detail.iou.toFixed(2)}): Enter keeps, Escape drops`));
  element.addEventListener('medfm-error', (e) => status(`not segmented: ${e.detail.message}`));

  // A clicked button gives the focus back, so Enter and Escape (accept, reject) reach the
  // tool rather than pressing the button again.
  for (const button of document.querySelectorAll('header button')) button.addEventListener('click', () => button.blur());

  let propagating = null;
  document.getElementById('propagate').addEventListener('click', async () => {
    if (propagating) {
      propagating.abort();
      return;
    }
    propagating = new AbortController();
    try {
      const r = await controller.propagate({ signal: propagating.signal, onProgress: (s) => status(`slice ${s.frame + 1}: ${s.area} pixels`) });
      status(`${r.slices.length} slices, stopped ${r.stopped.join('/')}`);
    } catch (e) {
      status(`not propagated: ${e.message}`);
    } finally {
      propagating = null;
    }
  });
  document.getElementById('export').addEventListener('click', async () => {
    try {
      const bytes = await controller.exportSeg();
      const a = document.createElement('a');
      a.href = URL.createObjectURL(new Blob([bytes], { type: 'application/dicom' }));
      a.download = 'medfm-seg.dcm';
      document.body.append(a);
      a.click();
      a.remove();
      status(`SEG: ${bytes.length} bytes`);
    } catch (e) {
      status(`not exported: ${e.message}`);
    }
  });
  await model;
  // For tests and the console.
  window.example = { engine, viewport, controller, cache, metaData, segmentation, utilities };
  document.body.dataset.ready = '1';
}

start().catch((e) => {
  status(String(e.message || e));
  document.body.dataset.error = String((e && e.stack) || e);
});
