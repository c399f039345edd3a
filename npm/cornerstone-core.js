// The body of medfm/cornerstone, bound to the Cornerstone3D it is given: `cornerstone.js`
// binds it to the app's own `@cornerstonejs/core` and `/tools` (bare imports, for a
// bundler), the OHIF extension (`ohif.js`) to the ones OHIF's build carries, which a
// module loaded at run time can reach only through OHIF's extension manager. One copy of
// Cornerstone3D per page: the tool, the labelmaps and the viewports must share its state.
import { MedFM } from './www/medfm.js';
import { medfmTool } from './cornerstone-tool.js';

/**
 * medfm/cornerstone's exports over `core` (the `@cornerstonejs/core` module) and `tools`
 * (`@cornerstonejs/tools`), both 5.x and initialised by the app.
 */
export function medfmCornerstone(core, tools) {
  const { Enums, cache, eventTarget, imageLoader, metaData, triggerEvent } = core;
  const { Enums: ToolsEnums, segmentation } = tools;


  /** The events of `@cornerstonejs/ai`'s controller, with its names, on Cornerstone3D's eventTarget. */
  const Events = Object.freeze({
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

  // A person's name as metadata providers give it: a string, or DICOM JSON's {Alphabetic}
  // (OHIF's instances), or a list of either.
  const personName = (v) => {
    const one = first(v);
    return typeof one === 'string' ? one : one?.Alphabetic;
  };

  // What each patient and study attribute may hold (its VR, as openPixels checks it).
  const FORMS = {
    birthDate: /^\d{8}$/, date: /^\d{8}$/, time: /^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$/, sex: /^[MFO]$/,
    id: /^[^\\\x00-\x1f\x7f-\x9f]{0,64}$/, accession: /^[^\\\x00-\x1f\x7f-\x9f]{0,16}$/, name: /^[^\\\x00-\x1f\x7f-\x9f]{0,64}$/,
    referringPhysician: /^[^\\\x00-\x1f\x7f-\x9f]{0,64}$/, description: /^[^\\\x00-\x1f\x7f-\x9f]{0,64}$/,
  };

  // The attributes given, as openPixels takes them, or undefined when none is: written into
  // the instances so that an exported SEG is filed with the patient and study. Dates and
  // times lose their separators ('2020-03-04'); a value no DICOM file could hold is left
  // out (the attribute is then empty in the SEG) rather than failing the segmentation.
  function identity(fields) {
    const out = {};
    for (const [k, v] of Object.entries(fields)) {
      let value = first(v);
      if (value === undefined || value === null) continue;
      value = String(value).trim();
      if (k === 'birthDate' || k === 'date') value = value.replace(/-/g, '');
      if (k === 'time') value = value.replace(/:/g, '');
      if (value && FORMS[k].test(value)) out[k] = value;
    }
    return Object.keys(out).length ? out : undefined;
  }
  const ALLOWED = [Int16Array, Uint16Array, Float32Array, Uint8Array];

  /**
   * The modality values of a decoded Cornerstone3D image and what `openPixels` needs with
   * them. `voi`: 'image' (the image's own window) or 'viewport' (the viewport's VOI range).
   */
  function pixelsOf(image, imageId, { viewport, voi = 'image' } = {}) {
    requireGreyscale(image, imageId);
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
    const plane = metaData.get('imagePlaneModule', imageId) || {};
    const patientModule = metaData.get('patientModule', imageId) || {};
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
    // Where the image is: the engine orders a series' images in space, as it does files.
    if (plane.imagePositionPatient && plane.rowCosines && plane.columnCosines) {
      spec.origin = Array.from(plane.imagePositionPatient, Number);
      spec.direction = [...plane.rowCosines, ...plane.columnCosines, ...cross(plane.rowCosines, plane.columnCosines)].map(Number);
    }
    const patient = identity({
      name: personName(patientModule.patientName),
      id: patientModule.patientId ?? patientModule.patientID,
      birthDate: patientModule.patientBirthDate,
      sex: patientModule.patientSex,
    });
    if (patient) spec.patient = patient;
    const studyDetails = identity({
      date: study.studyDate,
      time: study.studyTime,
      id: study.studyId ?? study.studyID,
      accession: study.accessionNumber,
      referringPhysician: personName(study.referringPhysicianName),
      description: study.studyDescription,
    });
    if (studyDetails) spec.study = studyDetails;
    const uids = uidsOf(imageId);
    if (uids) spec.uids = uids;
    return spec;
  }

  function requireGreyscale(image, imageId) {
    if (image.color || (image.numberOfComponents ?? 1) !== 1) {
      throw coded(`${imageId} is a colour image: medfm/cornerstone segments greyscale images`, 'bad-input');
    }
  }

  /** The UIDs of the instance behind `imageId` as `openPixels` takes them (undefined without
   * a SeriesInstanceUID and a SOPInstanceUID): metadata only, no pixels. */
  function uidsOf(imageId) {
    const series = metaData.get('generalSeriesModule', imageId) || {};
    const sop = metaData.get('sopCommonModule', imageId) || {};
    if (!series.seriesInstanceUID || !sop.sopInstanceUID) return undefined;
    return {
      study: (metaData.get('generalStudyModule', imageId) || {}).studyInstanceUID || series.studyInstanceUID,
      series: series.seriesInstanceUID,
      sopClass: sop.sopClassUID,
      instances: [sop.sopInstanceUID],
      frameOfReference: (metaData.get('imagePlaneModule', imageId) || {}).frameOfReferenceUID,
    };
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
  function stackPixelsOf(images, imageIds, options = {}) {
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

  // Per engine: the images opened in it, by SOP Instance UID (a promise each).
  const openedIn = new WeakMap();

  class MedfmSegmentationController {
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
      // The prompt of the last segment(): {imageId, box, points}, what propagate() carries by default.
      this.lastPrompt = null;
      this.loading = null;
      // The last mask written and what it replaced, until accepted or rejected.
      this.preview = null;
      // Stops encodeAhead(), while it runs.
      this.stopEncodeAhead = null;
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
        this.stopEncodeAhead?.();
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

    /**
     * Open `imageIds` in the engine (each image once per engine, whichever controller asks:
     * the engine joins images by their SeriesInstanceUID into one series ordered in space,
     * as it does files, and an instance opened again would only be read again) and say where
     * each is: [{series, frame, sop}] in the order given. Images are found in their series by
     * SOP Instance UID, so the viewer's stack order need not be the engine's.
     */
    async place(imageIds) {
      const fm = await this.initModel();
      let opened = openedIn.get(fm);
      if (!opened) openedIn.set(fm, (opened = new Map()));
      const placed = [];
      const seen = new Set();
      for (const imageId of imageIds) {
        // Loaded first: a wadouri image's metadata comes with its file.
        const image = cache.getImage(imageId) || (await imageLoader.loadAndCacheImage(imageId));
        requireGreyscale(image, imageId);
        const uids = uidsOf(imageId);
        const sop = uids?.study && uids.instances[0];
        if (!sop) {
          throw coded(`${imageId} has no StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID in Cornerstone3D's metadata: medfm finds an image in its series by them`, 'bad-input');
        }
        if (seen.has(sop)) {
          throw coded(`${imageId}: two images of one instance (${sop}, a multi-frame instance): not supported yet`, 'bad-input');
        }
        seen.add(sop);
        // Its pixels are read only the first time.
        if (!opened.has(sop)) {
          const spec = pixelsOf(image, imageId, { viewport: this.viewport, voi: this.voi });
          const done = fm.openPixels(spec).then((list) => {
            if (!list.length) throw coded(`${imageId}: ${list.errors?.[0]?.error || 'no series'}`, 'bad-input');
          });
          done.catch(() => opened.delete(sop));
          opened.set(sop, done);
        }
        placed.push({ sop, series: uids.series, done: opened.get(sop) });
      }
      await Promise.all(placed.map((p) => p.done));
      const frames = new Map();
      for (const uid of new Set(placed.map((p) => p.series))) {
        const series = fm.list().find((x) => x.uid === uid);
        const bySop = new Map();
        for (let k = 0; k < (series?.frames || 0); k++) bySop.set(fm.meta({ series: uid, frame: k }).sop_instance_uid, k);
        frames.set(uid, bySop);
      }
      return placed.map(({ sop, series }) => {
        const frame = frames.get(series).get(sop);
        if (frame === undefined) throw coded(`instance ${sop} is not in series ${series} after opening it`, 'internal');
        return { series, frame, sop };
      });
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
      if (!cache.getImage(imageId)) throw coded(`${imageId} is not in Cornerstone3D's cache: show it first`, 'bad-input');
      const [{ series, frame }] = await this.place([imageId]);
      const result = await fm.segment({ series, frame, box, points });
      const { id, index } = await this.labelmap();
      const labelmapImageId = labelmapImageFor(imageId, id);
      const labelmap = labelmapImageId && cache.getImage(labelmapImageId);
      if (!labelmap) throw coded(`segmentation ${id} has no labelmap image for ${imageId}`, 'bad-input');
      if (labelmap.rows !== result.rows || labelmap.columns !== result.cols) {
        throw coded(`the labelmap of ${imageId} is ${labelmap.columns}x${labelmap.rows}, the image ${result.cols}x${result.rows}`, 'bad-input');
      }
      this.acceptPreview();
      this.preview = { segmentationId: id, slices: [writeMask(labelmap, labelmapImageId, result.mask, index)] };
      this.lastPrompt = { imageId, box, points };
      segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(id);
      viewport.render();
      this.log('decoder', `medfm: ${result.area} pixels, predicted IoU ${result.iou.toFixed(3)}`);
      return { ...result, imageId, labelmapImageId, segmentationId: id, segmentIndex: index };
    }

    /**
     * The viewport's stack in the engine: its images' series (one), where each image is in it
     * (`places`, in the stack's order; `indexOf`: frame -> stack index) and each image's
     * labelmap image in the viewport's labelmap: {fm, series, imageIds, places, indexOf,
     * labelmaps, id, index}.
     */
    async stack() {
      const viewport = this.requireViewport();
      const fm = await this.initModel();
      const imageIds = viewport.getImageIds();
      const places = await this.place(imageIds);
      const series = places[0]?.series;
      if (places.some((p) => p.series !== series)) {
        throw coded(`the stack holds images of ${new Set(places.map((p) => p.series)).size} series: medfm propagates through one`, 'bad-input');
      }
      const { id, index } = await this.labelmap();
      const labelmaps = imageIds.map((imageId) => {
        const labelmapImageId = labelmapImageFor(imageId, id);
        const labelmap = labelmapImageId && cache.getImage(labelmapImageId);
        const image = cache.getImage(imageId);
        if (!labelmap) throw coded(`segmentation ${id} has no labelmap image for ${imageId}`, 'bad-input');
        if (labelmap.rows !== image.rows || labelmap.columns !== image.columns) {
          throw coded(`the labelmap of ${imageId} is ${labelmap.columns}x${labelmap.rows}, the image ${image.columns}x${image.rows}`, 'bad-input');
        }
        return { labelmapImageId, labelmap };
      });
      const indexOf = new Map(places.map((p, i) => [p.frame, i]));
      return { fm, series, imageIds, places, indexOf, labelmaps, id, index };
    }

    /**
     * Carry a box (and points) through the viewport's stack with medfm's 3D recipe
     * (`fm.propagate`: both ways, stopping at an empty or unconfident mask, or `extent`
     * slices each way), writing each slice's mask into the labelmap as it comes (one
     * preview for all of them). With a box, from the displayed image; with none, the last
     * segment()'s prompt from its image (what a propagate button does after a box).
     * `onProgress` gets each slice, `signal` cancels. Resolves to fm.propagate's result with
     * each slice's `imageId`.
     */
    async propagate({ box, points = [], extent, minIou, onProgress, signal } = {}) {
      const viewport = this.requireViewport();
      let from = viewport.getCurrentImageId();
      if (!box && !points.length) {
        const last = this.lastPrompt;
        if (!last || !viewport.getImageIds().includes(last.imageId)) {
          throw coded('nothing to propagate: draw a box on an image of this viewport first', 'bad-input');
        }
        ({ box, points, imageId: from } = last);
      }
      const { fm, series, imageIds, places, indexOf, labelmaps, id, index } = await this.stack();
      const at = imageIds.indexOf(from);
      if (at < 0) throw coded('the viewport shows no image of its stack', 'bad-input');
      const start = places[at].frame;
      this.acceptPreview();
      const preview = { segmentationId: id, slices: [] };
      this.preview = preview;
      const result = await fm.propagate({
        series, frame: start, box, points, extent, minIou, signal,
        onProgress: (slice) => {
          // A slice of the series this stack does not show (another viewer's images) is
          // in the result but in no labelmap here.
          const i = indexOf.get(slice.frame);
          if (i === undefined) return;
          const { labelmapImageId, labelmap } = labelmaps[i];
          preview.slices.push(writeMask(labelmap, labelmapImageId, slice.mask, index));
          segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(id);
          if (onProgress) onProgress({ ...slice, imageId: imageIds[i] });
        },
      });
      viewport.render();
      this.log('decoder', `medfm: ${result.slices.length} slices, ${result.voxels} voxels, stopped ${result.stopped.join('/')}`);
      return { ...result, slices: result.slices.map((sl) => ({ ...sl, imageId: imageIds[indexOf.get(sl.frame)] })), segmentationId: id, segmentIndex: index };
    }

    /**
     * The viewport's labelmap as a DICOM SEG (Part 10 bytes, medfm's writer): one segment
     * per segment index it holds (its label from the segmentation, else `label` and the
     * index), over the stack's images, referencing their instances. A pending preview is
     * part of it (accept or reject it first to decide). An empty labelmap is refused.
     */
    async exportSeg({ label = 'medfm' } = {}) {
      const { fm, series, places, labelmaps, id } = await this.stack();
      const segments = new Map();
      labelmaps.forEach(({ labelmap }, i) => {
        const { frame } = places[i];
        const voxels = labelmap.voxelManager;
        const n = labelmap.rows * labelmap.columns;
        for (let i = 0; i < n; i++) {
          const v = voxels.getAtIndex(i);
          if (!v) continue;
          if (!segments.has(v)) segments.set(v, new Map());
          const masks = segments.get(v);
          if (!masks.has(frame)) masks.set(frame, new Uint8Array(n));
          masks.get(frame)[i] = 1;
        }
      });
      if (!segments.size) throw coded('the labelmap is empty: nothing to export', 'bad-input');
      const named = segmentation.state.getSegmentation(id)?.segments || {};
      const list = [...segments.keys()].sort((a, b) => a - b).map((v) => ({
        label: named[v]?.label || (segments.size > 1 ? `${label} ${v}` : label),
        masks: [...segments.get(v)].map(([frame, mask]) => ({ frame, mask })),
      }));
      return fm.exportSeg({ series, segments: list });
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

    /**
     * Encode ahead: whenever the viewport rests on an image for `restMs` (default 250), encode
     * it and its `neighbours` (default 1) each side, nearest first, one at a time in the
     * background, so that a box on them answers in the decoder's time. The engine keeps its
     * last 8 encodings (an LRU), so neighbours beyond that are pointless. After each encode it
     * looks again where the viewport is, so scrolling on redirects it (an encode under way
     * finishes first). Returns a function that stops it; `disconnectViewport` stops it too.
     */
    encodeAhead({ neighbours = 1, restMs = 250 } = {}) {
      const viewport = this.requireViewport();
      this.stopEncodeAhead?.();
      const done = new Set();
      let timer = null;
      let running = false;
      let stopped = false;
      const wanted = () => {
        const ids = viewport.getImageIds();
        const at = viewport.getCurrentImageIdIndex();
        const out = [ids[at]];
        for (let k = 1; k <= neighbours; k++) out.push(ids[at + k], ids[at - k]);
        return out.filter(Boolean);
      };
      const run = async () => {
        if (running || stopped) return;
        running = true;
        try {
          const fm = await this.initModel();
          for (;;) {
            const next = wanted().find((id) => !done.has(id));
            if (!next || stopped || this.viewport !== viewport) break;
            done.add(next);
            const [{ series, frame }] = await this.place([next]);
            const r = await fm.encode({ series, frame });
            this.log('encoder', `medfm: encoded ${next} ahead in ${Math.round(r.ms)} ms`);
            // What the engine's LRU has let go is encoded again when wanted again.
            if (done.size > 8) done.delete(done.values().next().value);
          }
        } catch (e) {
          this.log('status', `medfm: encode ahead: ${e.message}`);
        } finally {
          running = false;
        }
      };
      const onImage = () => {
        clearTimeout(timer);
        timer = setTimeout(run, restMs);
      };
      viewport.element.addEventListener(Enums.Events.STACK_NEW_IMAGE, onImage);
      onImage();
      this.stopEncodeAhead = () => {
        stopped = true;
        clearTimeout(timer);
        viewport.element.removeEventListener(Enums.Events.STACK_NEW_IMAGE, onImage);
        this.stopEncodeAhead = null;
      };
      return this.stopEncodeAhead;
    }

    /**
     * As `@cornerstonejs/ai`'s controller: accept the preview, scroll the viewport one image
     * in `dir` (1 or -1) and segment the image shown then with the prompt of the image left
     * (the last `segment()`'s box and points, in image pixels), as a preview. Resolves to
     * the `segment()` result, or null (nothing scrolled) when the image shown has no prompt
     * or the stack has no image that way. The controller's own viewport only.
     */
    async interpolateScroll(viewport = this.viewport, dir = 1) {
      const own = this.requireViewport();
      if (viewport !== own) throw coded('interpolateScroll: the viewport given is not this controller\'s (initViewport it first)', 'bad-input');
      if (dir !== 1 && dir !== -1) throw coded(`interpolateScroll: dir is 1 or -1, not ${JSON.stringify(dir)}`, 'bad-input');
      this.acceptPreview();
      const prompt = this.lastPrompt;
      const ids = own.getImageIds();
      const next = own.getCurrentImageIdIndex() + dir;
      if (!prompt || prompt.imageId !== own.getCurrentImageId() || next < 0 || next >= ids.length) return null;
      await own.setImageIdIndex(next);
      return this.segment({ box: prompt.box, points: prompt.points, imageId: ids[next] });
    }

    /** Encode images ahead (default: the viewport's current one), so that a box answers in the decoder's time. */
    async cacheImageEncodings(imageIds) {
      const viewport = this.requireViewport();
      const fm = await this.initModel();
      const ids = imageIds || [viewport.getCurrentImageId()];
      for (const { series, frame } of await this.place(ids)) await fm.encode({ series, frame });
    }
  }

  const MedfmSegmentationTool = medfmTool(core, tools);

  return { Events, pixelsOf, stackPixelsOf, MedfmSegmentationController, MedfmSegmentationTool };
}
