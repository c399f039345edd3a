// medfm/cornerstone: medfm's box segmentation inside a Cornerstone3D viewer (issue 35,
// item 3: the controller's model, pixels, labelmap and propagation, and the drag tool;
// points from the tool, encode-ahead and volume viewports are still to come).
//
//   import { MedfmSegmentationController } from 'medfm/cornerstone';
//   const controller = new MedfmSegmentationController({ medfm: { backend: 'cpu' } });
//   await controller.initModel();
//   controller.initViewport(viewport);              // a stack viewport showing DICOM images
//   await controller.segment({ box: [x0, y0, x1, y1], points: [[x, y, 1]] });
//   controller.acceptPreview();                     // or rejectPreview(): the labelmap as before
//   await controller.propagate({ box, onProgress }); // through the stack, into the same labelmap
//
// Pixels come from the image Cornerstone3D already decoded (`cache.getImage(imageId)`,
// no second download): its modality values (the dicom-image-loader's rescale applied if
// it has not been) and, by default, the image's own window, so the model input is what
// `medfm segment` gives on the same file whatever W/L the reader has set for display
// (`voi: 'viewport'` takes the viewport's VOI instead). The mask lands in a Cornerstone3D
// labelmap segmentation of the viewport (created if it has none) at its active segment
// index, so the viewport draws it and Cornerstone3D's own tools and exports see it.
//
// Peer dependencies: @cornerstonejs/core and @cornerstonejs/tools 5.x, initialised by the
// app (`init()` of both) before the controller is used.
import { cache, eventTarget, getEnabledElement, imageLoader, metaData, triggerEvent, utilities } from '@cornerstonejs/core';
import { BaseTool, Enums as ToolsEnums, drawing, segmentation, utilities as toolUtilities } from '@cornerstonejs/tools';
import { MedFM } from './www/medfm.js';

/** The events of `@cornerstonejs/ai`'s controller, with its names, on Cornerstone3D's eventTarget. */
export const Events = Object.freeze({
  MODEL_LOADING_STARTED: 'ONNX_MODEL_LOADING_STARTED',
  MODEL_LOADING_COMPLETED: 'ONNX_MODEL_LOADING_COMPLETED',
  MODEL_COMPONENT_LOADED: 'ONNX_MODEL_COMPONENT_LOADED',
});

function coded(message, code) {
  const e = new Error(message);
  e.code = code;
  return e;
}

const first = (v) => (Array.isArray(v) ? v[0] : v);
const ALLOWED = [Int16Array, Uint16Array, Float32Array, Uint8Array];

/**
 * The modality values of a decoded Cornerstone3D image and what `openPixels` needs with
 * them. `voi`: 'image' (the image's own window) or 'viewport' (the viewport's VOI range).
 */
export function pixelsOf(image, imageId, { viewport, voi = 'image' } = {}) {
  if (image.color || (image.numberOfComponents ?? 1) !== 1) {
    throw coded(`${imageId} is a colour image: medfm/cornerstone segments greyscale images`, 'bad-input');
  }
  let data = image.getPixelData();
  const slope = image.slope ?? 1;
  const intercept = image.intercept ?? 0;
  // dicom-image-loader rescales to modality values unless told not to (preScale).
  const scaled = image.preScale?.scaled === true;
  if (!scaled && (slope !== 1 || intercept !== 0)) {
    data = Float32Array.from(data, (v) => v * slope + intercept);
  } else if (!ALLOWED.some((T) => data instanceof T)) {
    data = Float32Array.from(data);
  }
  let window;
  if (voi === 'viewport') {
    const range = viewport?.getProperties?.().voiRange;
    if (range) window = { center: (range.lower + range.upper) / 2, width: range.upper - range.lower };
  } else if (voi === 'image') {
    const center = first(image.windowCenter);
    const width = first(image.windowWidth);
    if (Number.isFinite(center) && Number.isFinite(width) && width > 0) window = { center, width };
  } else {
    throw coded(`voi must be 'image' or 'viewport', not ${JSON.stringify(voi)}`, 'bad-input');
  }
  const series = metaData.get('generalSeriesModule', imageId) || {};
  const study = metaData.get('generalStudyModule', imageId) || {};
  const sop = metaData.get('sopCommonModule', imageId) || {};
  const plane = metaData.get('imagePlaneModule', imageId) || {};
  const spec = {
    data,
    width: image.columns,
    height: image.rows,
    modality: series.modality || 'OT',
    photometric: image.photometricInterpretation === 'MONOCHROME1' ? 'MONOCHROME1' : 'MONOCHROME2',
  };
  if (window) spec.window = window;
  if (image.columnPixelSpacing > 0 && image.rowPixelSpacing > 0) {
    spec.spacing = [image.columnPixelSpacing, image.rowPixelSpacing, plane.sliceThickness || 1];
  }
  if (series.seriesInstanceUID && sop.sopInstanceUID) {
    spec.uids = {
      study: study.studyInstanceUID,
      series: series.seriesInstanceUID,
      sopClass: sop.sopClassUID,
      instances: [sop.sopInstanceUID],
      frameOfReference: plane.frameOfReferenceUID,
    };
  }
  return spec;
}

/** The labelmap image of segmentation `id` over `imageId` (by Cornerstone3D's own map, else by the derived images' referencedImageId). */
function labelmapImageFor(imageId, id) {
  const mapped = segmentation.getLabelmapImageIdsForImageId(imageId, id)?.[0];
  if (mapped) return mapped;
  const data = segmentation.state.getSegmentation(id)?.representationData?.Labelmap;
  const ids = data?.imageIds || Object.values(data?.labelmaps || {}).flatMap((layer) => layer.imageIds || []);
  return ids.find((labelmapId) => cache.getImage(labelmapId)?.referencedImageId === imageId);
}

/** Set `index` where `mask` is 1 in a labelmap image; the voxels changed and their old values. */
function writeMask(labelmap, labelmapImageId, mask, index) {
  const voxels = labelmap.voxelManager;
  const changed = [];
  for (let i = 0; i < mask.length; i++) {
    if (mask[i]) {
      const before = voxels.getAtIndex(i);
      if (before !== index) {
        changed.push(i, before);
        voxels.setAtIndex(i, index);
      }
    }
  }
  return { labelmapImageId, changed };
}

const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];

/**
 * The images of a stack, in its order, as one multi-frame `openPixels` spec: the same size,
 * each frame's modality values, the first image's window (the 3D recipe's clip), spacing,
 * origin and direction from the image planes when they are there.
 */
export function stackPixelsOf(images, imageIds, options = {}) {
  const specs = images.map((image, i) => pixelsOf(image, imageIds[i], options));
  const { width, height } = specs[0];
  const odd = specs.findIndex((s) => s.width !== width || s.height !== height);
  if (odd >= 0) {
    throw coded(`${imageIds[odd]} is ${specs[odd].width}x${specs[odd].height}, the stack's first image ${width}x${height}: one volume has one size`, 'bad-input');
  }
  const Type = specs.every((s) => s.data.constructor === specs[0].data.constructor) ? specs[0].data.constructor : Float32Array;
  const data = new Type(width * height * specs.length);
  specs.forEach((s, i) => data.set(s.data, i * width * height));
  const spec = { ...specs[0], data, frames: specs.length };
  const planes = imageIds.map((id) => metaData.get('imagePlaneModule', id) || {});
  const [p0, p1] = planes;
  if (p0?.imagePositionPatient && p0.rowCosines && p0.columnCosines) {
    const normal = cross(p0.rowCosines, p0.columnCosines);
    spec.origin = p0.imagePositionPatient;
    spec.direction = [...p0.rowCosines, ...p0.columnCosines, ...normal];
    if (spec.spacing && p1?.imagePositionPatient) {
      spec.spacing = [spec.spacing[0], spec.spacing[1], Math.abs(dot(sub(p1.imagePositionPatient, p0.imagePositionPatient), normal)) || spec.spacing[2]];
    }
  }
  if (spec.uids) spec.uids = { ...spec.uids, instances: specs.map((s) => s.uids?.instances?.[0]) };
  return spec;
}

export class MedfmSegmentationController {
  /**
   * options: `listeners` (functions called with (logger, ...message), as @cornerstonejs/ai's),
   * `medfm` (MedFM.create options: backend, precision, weights), `fm` (an engine already
   * created, shared with the app), `voi` ('image', default, or 'viewport'),
   * `segmentationId` (the labelmap to write; default: the viewport's first, else a new one).
   */
  constructor(options = {}) {
    this.listeners = options.listeners ? [...options.listeners] : [];
    this.medfmOptions = options.medfm || {};
    this.fm = options.fm || null;
    this.voi = options.voi || 'image';
    this.segmentationId = options.segmentationId || null;
    this.viewport = null;
    this.loading = null;
    // imageId -> Promise of the medfm series (one frame) of that image.
    this.opened = new Map();
    // The stack's imageIds (joined) -> the medfm series of the whole stack.
    this.stacks = new Map();
    // The last mask written and what it replaced, until accepted or rejected.
    this.preview = null;
  }

  log(logger, ...args) {
    for (const listener of this.listeners) listener(logger, ...args);
  }

  /** Start the engine (once; every later call returns the same promise). */
  initModel() {
    if (!this.loading) {
      triggerEvent(eventTarget, Events.MODEL_LOADING_STARTED, { modelName: 'litemedsam' });
      this.loading = (this.fm ? Promise.resolve(this.fm) : MedFM.create(this.medfmOptions)).then((fm) => {
        this.fm = fm;
        triggerEvent(eventTarget, Events.MODEL_COMPONENT_LOADED, { name: 'litemedsam', key: 'encoder+decoder' });
        triggerEvent(eventTarget, Events.MODEL_LOADING_COMPLETED, { modelName: 'litemedsam' });
        this.log('status', 'medfm: model loaded');
        return fm;
      });
      this.loading.catch(() => { this.loading = null; });
    }
    return this.loading;
  }

  /** Work on `viewport` (one at a time: a previous one is disconnected). */
  initViewport(viewport) {
    if (this.viewport && this.viewport !== viewport) this.disconnectViewport(this.viewport);
    this.viewport = viewport;
  }

  disconnectViewport(viewport = this.viewport) {
    if (viewport && this.viewport === viewport) {
      this.rejectPreview();
      this.viewport = null;
    }
  }

  /** The viewport's labelmap (created from its images if it has none) and its active segment index. */
  async labelmap() {
    const viewport = this.requireViewport();
    const type = ToolsEnums.SegmentationRepresentations.Labelmap;
    let id = this.segmentationId;
    if (!id) {
      const shown = segmentation.state.getSegmentationRepresentations(viewport.id, { type }) || [];
      id = shown[0]?.segmentationId;
    }
    if (!id || !segmentation.state.getSegmentation(id)) {
      id = id || `medfm-${viewport.id}`;
      const derived = imageLoader.createAndCacheDerivedLabelmapImages(viewport.getImageIds());
      segmentation.addSegmentations([{
        segmentationId: id,
        representation: { type, data: { imageIds: derived.map((i) => i.imageId) } },
      }]);
      await segmentation.addLabelmapRepresentationToViewport(viewport.id, [{ segmentationId: id }]);
    }
    this.segmentationId = id;
    const index = segmentation.segmentIndex.getActiveSegmentIndex(id) || 1;
    return { id, index };
  }

  requireViewport() {
    if (!this.viewport) throw coded('no viewport: call initViewport(viewport) first', 'bad-input');
    return this.viewport;
  }

  /** The medfm series of one displayed image (opened once per imageId). */
  seriesOf(imageId) {
    let opened = this.opened.get(imageId);
    if (!opened) {
      const image = cache.getImage(imageId);
      if (!image) throw coded(`${imageId} is not in Cornerstone3D's cache: show it first`, 'bad-input');
      const spec = pixelsOf(image, imageId, { viewport: this.viewport, voi: this.voi });
      opened = this.fm.openPixels(spec).then((list) => {
        if (!list.length) throw coded(`${imageId}: ${list.errors?.[0]?.error || 'no series'}`, 'bad-input');
        return list[0].uid;
      });
      opened.catch(() => this.opened.delete(imageId));
      this.opened.set(imageId, opened);
    }
    return opened;
  }

  /**
   * Segment the displayed image (or `imageId`) from a box `[x0, y0, x1, y1]` in image
   * pixels and optional points `[x, y, label]` (1 include, 0 exclude). The mask is written
   * into the labelmap as a preview (a previous preview is accepted first); resolves to
   * `{ mask, area, iou, imageId, labelmapImageId, segmentationId, segmentIndex }`.
   */
  async segment({ box, points = [], imageId } = {}) {
    const viewport = this.requireViewport();
    const fm = await this.initModel();
    imageId = imageId || viewport.getCurrentImageId();
    const series = await this.seriesOf(imageId);
    const result = await fm.segment({ series, frame: 0, box, points });
    const { id, index } = await this.labelmap();
    const labelmapImageId = labelmapImageFor(imageId, id);
    const labelmap = labelmapImageId && cache.getImage(labelmapImageId);
    if (!labelmap) throw coded(`segmentation ${id} has no labelmap image for ${imageId}`, 'bad-input');
    if (labelmap.rows !== result.rows || labelmap.columns !== result.cols) {
      throw coded(`the labelmap of ${imageId} is ${labelmap.columns}x${labelmap.rows}, the image ${result.cols}x${result.rows}`, 'bad-input');
    }
    this.acceptPreview();
    this.preview = { segmentationId: id, slices: [writeMask(labelmap, labelmapImageId, result.mask, index)] };
    segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(id);
    viewport.render();
    this.log('decoder', `medfm: ${result.area} pixels, predicted IoU ${result.iou.toFixed(3)}`);
    return { ...result, imageId, labelmapImageId, segmentationId: id, segmentIndex: index };
  }

  /**
   * Carry a box (and points) from the displayed image through the viewport's stack with
   * medfm's 3D recipe (`fm.propagate`: both ways, stopping at an empty or unconfident mask,
   * or `extent` slices each way), writing each slice's mask into the labelmap as it comes
   * (one preview for all of them). `onProgress` gets each slice, `signal` cancels.
   * Resolves to fm.propagate's result with each slice's `imageId`.
   */
  async propagate({ box, points = [], extent, minIou, onProgress, signal } = {}) {
    const viewport = this.requireViewport();
    const fm = await this.initModel();
    const imageIds = viewport.getImageIds();
    const start = imageIds.indexOf(viewport.getCurrentImageId());
    if (start < 0) throw coded('the viewport shows no image of its stack', 'bad-input');
    const images = [];
    for (const id of imageIds) images.push(cache.getImage(id) || (await imageLoader.loadAndCacheImage(id)));
    const spec = stackPixelsOf(images, imageIds, { viewport, voi: this.voi });
    const { id, index } = await this.labelmap();
    const labelmaps = imageIds.map((imageId) => {
      const labelmapImageId = labelmapImageFor(imageId, id);
      const labelmap = labelmapImageId && cache.getImage(labelmapImageId);
      if (!labelmap) throw coded(`segmentation ${id} has no labelmap image for ${imageId}`, 'bad-input');
      if (labelmap.rows !== spec.height || labelmap.columns !== spec.width) {
        throw coded(`the labelmap of ${imageId} is ${labelmap.columns}x${labelmap.rows}, the image ${spec.width}x${spec.height}`, 'bad-input');
      }
      return { labelmapImageId, labelmap };
    });
    // The stack is opened in the engine once (its pixels are held there, as an open file's).
    const key = imageIds.join('\n');
    let series = this.stacks.get(key);
    if (!series) {
      const [opened] = await fm.openPixels(spec);
      if (!opened) throw coded('the stack could not be opened', 'bad-input');
      series = opened.uid;
      this.stacks.set(key, series);
    }
    this.acceptPreview();
    const preview = { segmentationId: id, slices: [] };
    this.preview = preview;
    const result = await fm.propagate({
      series, frame: start, box, points, extent, minIou, signal,
      onProgress: (slice) => {
        const { labelmapImageId, labelmap } = labelmaps[slice.frame];
        preview.slices.push(writeMask(labelmap, labelmapImageId, slice.mask, index));
        segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(id);
        if (onProgress) onProgress({ ...slice, imageId: imageIds[slice.frame] });
      },
    });
    viewport.render();
    this.log('decoder', `medfm: ${result.slices.length} slices, ${result.voxels} voxels, stopped ${result.stopped.join('/')}`);
    return { ...result, slices: result.slices.map((sl) => ({ ...sl, imageId: imageIds[sl.frame] })), segmentationId: id, segmentIndex: index };
  }

  /** Keep the last mask. */
  acceptPreview() {
    this.preview = null;
  }

  /** Undo the last mask: the labelmap as it was before it. */
  rejectPreview() {
    const preview = this.preview;
    this.preview = null;
    if (!preview) return;
    for (const { labelmapImageId, changed } of preview.slices) {
      const voxels = cache.getImage(labelmapImageId)?.voxelManager;
      if (!voxels) continue;
      for (let k = 0; k < changed.length; k += 2) voxels.setAtIndex(changed[k], changed[k + 1]);
    }
    segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(preview.segmentationId);
    this.viewport?.render();
  }

  /** Drop the preview (as rejectPreview). */
  clear() {
    this.rejectPreview();
  }

  /** Encode images ahead (default: the viewport's current one), so that a box answers in the decoder's time. */
  async cacheImageEncodings(imageIds) {
    const viewport = this.requireViewport();
    const fm = await this.initModel();
    const ids = imageIds || [viewport.getCurrentImageId()];
    for (const imageId of ids) {
      if (!cache.getImage(imageId)) await imageLoader.loadAndCacheImage(imageId);
      await fm.encode({ series: await this.seriesOf(imageId), frame: 0 });
    }
  }
}

/**
 * A Cornerstone3D tool: drag a box on a viewport's image (drawn while dragging, in the
 * `boxColor` configuration) and the controller (the tool's `controller` configuration)
 * segments it into the labelmap as a preview; Enter accepts it, Escape rejects it. A
 * click (no drag) adds a point to the prompt of the pending preview (a new prompt when
 * there is none): an include point, or an exclude point with Shift (bind the tool to the
 * primary button with the Shift modifier too); the preview is replaced by the mask of the
 * box and every point so far. The result (or the error) is dispatched on the viewport's element
 * as a `medfm-segmented` (or `medfm-error`) CustomEvent. Register it as any tool:
 * `addTool(MedfmSegmentationTool)`, then in a tool group
 * `addTool(MedfmSegmentationTool.toolName, { controller })` and `setToolActive`.
 */
export class MedfmSegmentationTool extends BaseTool {
  static toolName = 'MedfmSegmentation';

  constructor(toolProps = {}, defaultToolProps = { supportedInteractionTypes: ['Mouse'], configuration: { controller: null, minBoxPixels: 2, boxColor: 'rgb(255, 200, 0)' } }) {
    super(toolProps, defaultToolProps);
    this.drag = null;
    // The prompt of the preview this tool made last: {imageId, box, points, preview}.
    this.prompt = null;
  }

  preMouseDownCallback = (evt) => {
    const { element, currentPoints } = evt.detail;
    const controller = this.configuration.controller;
    const viewport = getEnabledElement(element)?.viewport;
    const imageId = viewport?.getCurrentImageId?.();
    if (!controller || !imageId) return false;
    const exclude = Boolean(evt.detail.event?.shiftKey);
    this.drag = { element, viewport, imageId, exclude, start: currentPoints.world, end: currentPoints.world };
    element.addEventListener(ToolsEnums.Events.MOUSE_DRAG, this.onDrag);
    element.addEventListener(ToolsEnums.Events.MOUSE_UP, this.onUp);
    element.addEventListener(ToolsEnums.Events.MOUSE_CLICK, this.onUp);
    this.listenKeys(element.ownerDocument);
    toolUtilities.triggerAnnotationRenderForViewportIds([viewport.id]);
    return true;
  };

  onDrag = (evt) => {
    if (!this.drag) return;
    this.drag.end = evt.detail.currentPoints.world;
    toolUtilities.triggerAnnotationRenderForViewportIds([this.drag.viewport.id]);
  };

  /** The box being dragged, on its viewport (Cornerstone3D's annotation render calls this). */
  renderAnnotation(enabledElement, svgDrawingHelper) {
    const drag = this.drag;
    if (!drag || enabledElement.viewport.id !== drag.viewport.id) return false;
    const [x0, y0] = enabledElement.viewport.worldToCanvas(drag.start);
    const [x1, y1] = enabledElement.viewport.worldToCanvas(drag.end);
    const corners = [[x0, y0], [x1, y0], [x0, y1], [x1, y1]];
    drawing.drawRectByCoordinates(svgDrawingHelper, 'medfm-box', 'box', corners, { color: this.configuration.boxColor, lineWidth: 2 }, 'medfm-box');
    return true;
  }

  onUp = async (evt) => {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    const { element, viewport, imageId } = drag;
    element.removeEventListener(ToolsEnums.Events.MOUSE_DRAG, this.onDrag);
    element.removeEventListener(ToolsEnums.Events.MOUSE_UP, this.onUp);
    element.removeEventListener(ToolsEnums.Events.MOUSE_CLICK, this.onUp);
    toolUtilities.triggerAnnotationRenderForViewportIds([viewport.id]);
    const end = evt.detail?.currentPoints?.world || drag.end;
    const [x0, y0] = utilities.worldToImageCoords(imageId, drag.start);
    const [x1, y1] = utilities.worldToImageCoords(imageId, end);
    const dragged = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)].map(Math.round);
    const min = this.configuration.minBoxPixels ?? 2;
    const controller = this.configuration.controller;
    let prompt;
    if (dragged[2] - dragged[0] >= min && dragged[3] - dragged[1] >= min) {
      prompt = { imageId, box: dragged, points: [] };
    } else {
      // A click: a point added to the pending preview's prompt (on this image), else a new
      // one. Off the image it is no point (and the preview stays).
      const image = cache.getImage(imageId);
      if (!image || x1 < 0 || y1 < 0 || x1 > image.columns - 1 || y1 > image.rows - 1) return;
      const pending = this.prompt && this.prompt.imageId === imageId && this.prompt.preview && this.prompt.preview === controller.preview;
      prompt = pending ? { ...this.prompt, points: [...this.prompt.points] } : { imageId, box: undefined, points: [] };
      prompt.points.push([Math.round(x1), Math.round(y1), drag.exclude ? 0 : 1]);
      if (pending) controller.rejectPreview();
    }
    const { box, points } = prompt;
    try {
      if (controller.viewport !== viewport) controller.initViewport(viewport);
      const result = await controller.segment({ box, points, imageId });
      this.prompt = { ...prompt, preview: controller.preview };
      element.dispatchEvent(new CustomEvent('medfm-segmented', { detail: { ...result, box, points } }));
    } catch (e) {
      this.prompt = null;
      controller.log('status', `medfm: ${e.message}`);
      element.dispatchEvent(new CustomEvent('medfm-error', { detail: { code: e.code || 'internal', message: e.message, box, points } }));
    }
  };

  /** Enter accepts the preview, Escape rejects it (one listener per document). */
  listenKeys(doc) {
    if (!doc || this.keysOn === doc) return;
    this.keysOn = doc;
    doc.addEventListener('keydown', (e) => {
      const controller = this.configuration.controller;
      if (!controller?.preview) return;
      if (e.key === 'Enter') controller.acceptPreview();
      else if (e.key === 'Escape') controller.rejectPreview();
    });
  }
}
