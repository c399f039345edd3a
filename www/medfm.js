// medfm JS API: LiteMedSAM segmentation and embeddings of DICOM images, computed in a
// Web Worker on WebGPU or the CPU (wasm). Nothing leaves the page: the weights come from
// beside this module (or the caller's `weights`), images from the caller.
//
// This file is the `medfm` npm package's entry (scripts/npm_pack.sh) and the web app's
// API (www/app.js imports it): one source for both. The worker, the engine's wasm and the
// int8 weights are located with literal `new URL(..., import.meta.url)`, so bundlers
// (Vite, webpack 5) emit them with no configuration.
//
//   const medfm = await MedFM.create({ backend: 'auto' | 'webgpu' | 'cpu', precision: 'int8', weights });
//   const series = await medfm.open(filesOrUrls);      // File, Blob, ArrayBuffer or URL
//   // `series` below is a series' index or its SeriesInstanceUID
//   const r = await medfm.segment({ series: series[0].uid, frame: 0, box: [x0, y0, x1, y1],
//                                   points: [[x, y, 1]] });
//   // r = { mask: Uint8Array(rows*cols), rows, cols, area, iou, lowConfidence, warnings, backend, ms }
//   await medfm.setBackend('cpu');
//   const v = await medfm.propagate({ series: 0, frame: 5, box, onProgress, signal });
//   // v = { slices: [{frame, mask, area, iou}], stopped, voxels, volumeMl, warnings, ms }
//   const seg = await medfm.exportSeg({ series: 0, segments: [{ label, color, masks: v.slices }] });
//   // exportNifti({ series: 0, segments }): the same segments as a NIfTI label map
//
// DICOMweb (a PACS; `dicomweb: {url, headers}`: the service root, e.g. '/dicom-web' behind
// the app's reverse proxy, and the request headers such as Authorization, sent and never
// kept):
//   const studies = await medfm.searchStudies({ dicomweb, query: { patientId, date } });
//   const series = await medfm.searchSeries({ dicomweb, study: studies[0].uid });
//   await medfm.open({ dicomweb: { ...dicomweb, study, series }, onProgress, signal });
//   await medfm.store({ dicomweb, bytes: seg });  // STOW-RS: {status, instances}
//
// Errors are `Error`s with a `code`: 'bad-input' (not DICOM, undecodable, a bad prompt
// or argument), 'unsupported' (pixel data in an encoding this build does not decode, e.g.
// JPEG-LS in the browser: converting the file helps), 'weights' (missing, foreign or unreadable weights), 'device' (WebGPU
// failed), 'io' (a file or URL could not be read), 'internal' (anything else).

// The weights shipped beside this module (the app's dist/ and the npm package both put
// them at ../weights/): int8 only; other precisions come from the `weights` option.
const BUNDLED_WEIGHTS = {
  int8: new URL('../weights/lite_medsam_int8.bpk', import.meta.url),
};

function coded(message, code) {
  const e = new Error(message);
  e.code = code;
  return e;
}

// A fresh ArrayBuffer of ours holding the bytes of an ArrayBuffer or typed array (null
// for anything else): what is transferred to the worker, so that the caller's buffer
// stays usable (a transfer would detach it).
function copyOf(x) {
  if (x instanceof ArrayBuffer) return x.slice(0);
  if (ArrayBuffer.isView(x)) return x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength);
  return null;
}

// The bytes of an open() item, always a fresh ArrayBuffer of ours (copyOf).
async function toBytes(x) {
  const copy = copyOf(x);
  if (copy) return copy;
  if (typeof Blob !== 'undefined' && x instanceof Blob) return x.arrayBuffer();
  if (typeof x === 'string' || x instanceof URL) {
    const url = new URL(x, location.href);
    if (url.origin !== location.origin) {
      throw coded(`refusing to fetch ${url.href}: only this app's origin is allowed`, 'bad-input');
    }
    // No redirects (a same-origin URL must not hand the request to another origin) and no
    // HTTP cache (patient data is not kept on disk).
    let r;
    try {
      r = await fetch(url, { redirect: 'manual', cache: 'no-store', credentials: 'same-origin' });
    } catch (e) {
      throw coded(`cannot load ${url.href}: ${e.message} (offline?)`, 'io');
    }
    if (r.type === 'opaqueredirect' || (r.status >= 300 && r.status < 400)) {
      throw coded(`refusing ${url.href}: it redirects elsewhere; only this app's origin is allowed`, 'bad-input');
    }
    if (r.url && new URL(r.url).origin !== location.origin) {
      throw coded(`refusing ${url.href}: it was answered by ${new URL(r.url).origin}; only this app's origin is allowed`, 'bad-input');
    }
    if (!r.ok) throw coded(`cannot load ${url.href}: HTTP ${r.status}`, 'io');
    return r.arrayBuffer();
  }
  throw coded('open() takes File, Blob, ArrayBuffer, typed array or same-origin URL', 'bad-input');
}

export class MedFM extends EventTarget {
  /**
   * Start the worker and load the model. Options: backend ('auto' default: WebGPU when
   * the adapter is a real GPU, else CPU: a software adapter such as SwiftShader is passed
   * over, with the reason in `info.fallback`; 'webgpu' forces the adapter), precision
   * ('int8' default, 'fp32'), weights: where the weights come from, pinned by sha256
   * (this build runs only the LiteMedSAM weights whose hashes it was built with): a URL
   * (string or URL) or the bytes (ArrayBuffer or typed array) of the `precision` chosen
   * here, or an object of them by precision ({int8, fp32}); by default the int8 weights
   * shipped beside this module (a URL weights file is kept in the Cache API and checked
   * again on each load).
   * Emits 'progress' events ({detail: {stage, loaded, total, ms, backend}}): stage
   * 'download' and 'init' while loading, 'span' ({name, ms}) as each step of the
   * library's pipeline ends (read, decode, preprocess, encode, decode_mask, write: the
   * spans `medfm -v` prints; on WebGPU `encode` times the submission, not the GPU).
   */
  static async create(options = {}) {
    const m = new MedFM(options);
    await m.setBackend(options.backend || 'auto', options.precision || 'int8');
    return m;
  }

  constructor(options = {}) {
    super();
    this.requested = options.backend || 'auto';
    this.precision = options.precision || 'int8';
    this.weights = options.weights;
    this.weightsPrecision = this.precision; // the precision a single `weights` is for
    this.info = null; // {backend, precision, fallback}
    // From the engine (the library's series rule): [{index, uid, study, modality,
    // description, rows, cols, frames, refs: [[imageId, frame]], copies: [imageId],
    // warnings}]: an instance opened again is listed once, its other ids in copies.
    this.series = [];
    this.metas = new Map(); // imageId -> meta
    this.files = []; // bytes of every opened file (to reopen after a worker restart)
    this.panics = 0;
    this._startWorker();
  }

  _startWorker() {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this.nextId = 1;
    this.pending = new Map();
    this.worker.onmessage = (ev) => {
      const msg = ev.data;
      if (msg.event === 'progress') {
        this.dispatchEvent(new CustomEvent('progress', { detail: msg }));
        return;
      }
      if (msg.event === 'slice' || msg.event === 'instance') {
        const p = this.pending.get(msg.call);
        if (p && p.onEvent) p.onEvent(msg);
        return;
      }
      if (msg.event === 'crashed') {
        this.panics += 1;
        this.crashed = msg.error;
        this.dispatchEvent(new CustomEvent('crashed', { detail: msg }));
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(coded(msg.error, msg.code || 'internal'));
    };
    this.worker.onerror = (ev) => {
      const err = coded(`worker failed: ${ev.message || 'unknown error'}`, 'internal');
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }

  async _call(op, args, transfer = [], hooks = null) {
    // A crashed engine (a Rust panic traps its wasm instance) is replaced before the next
    // call: a fresh worker on the CPU with the open files reloaded.
    if (this.crashed && op !== 'loadModel') await this._recover();
    return this._post(op, args, transfer, hooks);
  }

  async _recover() {
    const reason = this.crashed;
    this.crashed = null;
    this.worker.terminate();
    this._startWorker();
    this.info = await this._loadModel('cpu', this.precision);
    this.info.fallback = `the ${this.requested} engine stopped (${reason}); restarted on the CPU`;
    await this._reopen();
    this.dispatchEvent(new CustomEvent('recovered', { detail: this.info }));
  }

  // hooks: {onEvent(msg)} for the call's events; its `id` is set to the call's id.
  _post(op, args, transfer = [], hooks = null) {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject, onEvent: hooks && hooks.onEvent });
      if (hooks) hooks.id = id;
      this.worker.postMessage({ id, op, args }, transfer);
    });
  }

  /** The backend in use: 'webgpu' or 'cpu'. */
  get backend() {
    return this.info && this.info.backend;
  }

  /**
   * Switch backend ('auto' | 'webgpu' | 'cpu') and/or precision ('int8' | 'fp32': the
   * weights the app serves; an unknown or unserved one is refused with code 'bad-input').
   * A WebGPU failure under 'auto' falls back to CPU (reason in `info.fallback`). If the
   * engine crashed, a fresh worker is started on the CPU and the open files reloaded.
   */
  async setBackend(name, precision = this.precision) {
    if (!['auto', 'webgpu', 'cpu'].includes(name)) throw coded(`unknown backend ${name}: use auto, webgpu or cpu`, 'bad-input');
    // The precision is checked by the engine (model::Precision, the one list) against
    // the weights this app serves.
    const before = [this.requested, this.precision];
    this.requested = name;
    this.precision = precision;
    if (this.crashed) await this._recover();
    try {
      this.info = await this._loadModel(name, precision);
    } catch (e) {
      // Refused (e.g. a precision the app does not serve): the model loaded before stays.
      if (!this.crashed) [this.requested, this.precision] = before;
      if (!this.crashed || name === 'cpu') throw e;
      // The wasm instance died (e.g. a WebGPU driver problem): start over on the CPU.
      await this._recover();
    }
    return this.info;
  }

  _loadModel(backend, precision) {
    const weights = this._weightsFor(precision);
    return this._post('loadModel', { backend, precision, weights }, weights.bytes ? [weights.bytes] : []);
  }

  // The worker's weights source for a precision: {url} or {bytes} (a fresh copy: it is
  // transferred), from the `weights` option or shipped beside this module.
  _weightsFor(precision) {
    const w = this.weights;
    const single = typeof w === 'string' || w instanceof URL || w instanceof ArrayBuffer || ArrayBuffer.isView(w);
    const given = w === undefined || w === null ? undefined : single ? (precision === this.weightsPrecision ? w : undefined) : w[precision];
    if (given === undefined || given === null) {
      if (BUNDLED_WEIGHTS[precision]) return { url: BUNDLED_WEIGHTS[precision].href };
      throw coded(`no ${precision} weights: only int8 weights ship with medfm; pass weights: { ${precision}: url or bytes }`, 'bad-input');
    }
    const bytes = copyOf(given);
    if (bytes) return { bytes };
    if (typeof given === 'string' || given instanceof URL) {
      try {
        return { url: new URL(String(given), globalThis.location && location.href).href };
      } catch {
        throw coded(`weights ${given} is not a URL`, 'bad-input');
      }
    }
    throw coded('weights: give a URL, an ArrayBuffer or a typed array (or an object of them by precision)', 'bad-input');
  }

  async _reopen() {
    const files = this.files;
    const old = this.series.length;
    this.files = [];
    this.metas.clear();
    for (const bytes of files) await this._openOne(bytes.slice(0), true);
    await this._listSeries(true);
    if (this.series.length !== old) throw coded('reopening the files after a restart gave different series', 'internal');
  }

  async _openOne(bytes, recovering = false) {
    const copy = bytes.slice(0);
    const { id, meta } = await (recovering ? this._post : this._call).call(this, 'open', { bytes }, [bytes]);
    this._keep(copy, id, meta);
    return id;
  }

  /** An opened file's bytes (reopened after a worker restart) and its metadata. */
  _keep(bytes, id, meta) {
    this.files.push(bytes);
    this.metas.set(id, meta);
  }

  // The series list and slice order, from the engine (the JS side sorts nothing).
  async _listSeries(recovering = false) {
    this.series = await (recovering ? this._post : this._call).call(this, 'series', {});
    this._where = new Map();
    for (const s of this.series) s.refs.forEach(([id, f], i) => this._where.set(`${id}:${f}`, [s.index, i]));
  }

  /**
   * Open DICOM files (File/Blob/ArrayBuffer/typed array/same-origin URL). Files that are
   * not DICOM are reported in `errors` ({name, error, code}) and skipped. Resolves to the
   * series of these files [{index, uid, study, modality, description, rows, cols, frames,
   * warnings}] (a series already open that a file joins included; `list()` gives every
   * open series) plus `errors`: series by SeriesInstanceUID in the order first opened, frames in space
   * (along the slice normal; by InstanceNumber when the geometry does not allow it, with
   * the reason in `warnings`), as the CLI orders a series. An instance opened again (the
   * same SOP Instance UID: the same file twice, a copy, another encoding of it) is one
   * instance: listed once, as first opened, with a warning.
   */
  async open(filesOrUrls) {
    if (filesOrUrls && filesOrUrls.dicomweb) return this._openDicomweb(filesOrUrls);
    const list = Array.isArray(filesOrUrls) || filesOrUrls instanceof FileList ? Array.from(filesOrUrls) : [filesOrUrls];
    const errors = [];
    const ids = new Set();
    for (const item of list) {
      const name = item.name || String(item);
      try {
        ids.add(await this._openOne(await toBytes(item)));
      } catch (e) {
        errors.push({ name, error: e.message, code: e.code || 'internal' });
      }
    }
    await this._listSeries();
    const out = this._seriesList(ids);
    out.errors = errors;
    return out;
  }

  /**
   * Open pixels a viewer has already decoded: {data, width, height, frames = 1, spacing,
   * origin, direction, modality, window: {center, width}, photometric, description,
   * uids}. `data`: Int16Array, Uint16Array, Float32Array or Uint8Array of modality values
   * (the modality LUT applied, as Cornerstone3D's scalar data is), frames back to back,
   * row-major (RGB interleaved, Uint8Array only). `spacing` [x, y, slice] mm, `origin` the
   * patient position of frame 0's first pixel, `direction` the row, column and slice
   * directions (9 numbers): Cornerstone3D's volume fields. `window` is the image's own
   * (the CT recipe uses it as a file's first window). `uids` {study, series, sopClass,
   * instances: [one per frame], frameOfReference}: the source instances, so that
   * exportSeg references them.
   * The engine makes them DICOM instances (one per frame) and opens those as files: the
   * same pixels give the same model input as the file they came from. Resolves like
   * `open()` to the series ([{index, uid, rows, cols, frames, ...}], `errors` empty);
   * bad input rejects with code 'bad-input' saying what is wrong.
   */
  async openPixels({ data, ...spec } = {}) {
    if (!ArrayBuffer.isView(data) || data instanceof DataView) {
      throw coded('openPixels needs data: an Int16Array, Uint16Array, Float32Array or Uint8Array', 'bad-input');
    }
    // Plain arrays for the engine (Cornerstone3D gives Float32Array/vec3 geometry).
    for (const k of ['spacing', 'origin', 'direction']) {
      if (spec[k] !== undefined && spec[k] !== null) spec[k] = Array.from(spec[k], Number);
    }
    const files = await this._call('pixelsToDicom', { spec, data });
    const ids = new Set();
    for (const bytes of files) ids.add(await this._openOne(bytes.buffer));
    await this._listSeries();
    const out = this._seriesList(ids);
    out.errors = [];
    return out;
  }

  /**
   * Every open series, as `open()` describes them (whoever opened them: the app's
   * samples, earlier calls, a DICOMweb retrieve), in the engine's order.
   */
  list() {
    return this._seriesList();
  }

  // The series list, or with `ids` (opened files) only the series holding one of them;
  // in the engine's order (series in the order first opened), so a call's result does
  // not depend on other calls running meanwhile.
  _seriesList(ids = null) {
    return this.series
      .filter((s) => !ids || s.refs.some(([id]) => ids.has(id)) || s.copies.some((id) => ids.has(id)))
      .map(({ index, uid, study, modality, description, rows, cols, frames, warnings }) => ({
        index, uid, study, modality, description, rows, cols, frames, warnings,
      }));
  }

  // The server and headers of a `dicomweb` option: the URL resolved against the page
  // (a same-origin '/dicom-web' works), headers as strings.
  _server(d) {
    if (!d || !d.url) throw coded('dicomweb needs {url}: the service root, e.g. /dicom-web', 'bad-input');
    let server;
    try {
      server = new URL(String(d.url), location.href).href.replace(/\/+$/, '');
    } catch {
      throw coded(`dicomweb url ${d.url} is not a URL`, 'bad-input');
    }
    const headers = {};
    for (const [k, v] of Object.entries(d.headers || {})) headers[k] = String(v);
    return { server, headers };
  }

  /**
   * QIDO-RS search of studies on a DICOMweb server: {dicomweb: {url, headers}, query:
   * {patientId, patientName (wildcards * ?), date ('YYYYMMDD' or a range
   * 'YYYYMMDD-YYYYMMDD'), modality, accession, limit, offset}}. Resolves to [{uid,
   * patientId, patientName, date, accession, description, modalities, series, instances}].
   */
  async searchStudies({ dicomweb, query } = {}) {
    return this._call('dicomwebSearch', { ...this._server(dicomweb), what: 'studies', query });
  }

  /** The series of a study: {dicomweb, study, query} -> [{uid, modality, number, description, instances}]. */
  async searchSeries({ dicomweb, study, query } = {}) {
    return this._call('dicomwebSearch', { ...this._server(dicomweb), what: 'series', study, query });
  }

  // open({dicomweb: {url, headers, study, series?}, onProgress, signal}): WADO-RS,
  // instances opened as they arrive. onProgress({instances, bytes, series?}): `series` (the
  // retrieved series so far) on the first instance and then at most once a second, so a viewer
  // shows the first slice before the rest has arrived. signal.abort() stops the transfer
  // (what arrived stays open; `retrieved.stopped` is 'cancelled'). Nothing is cached.
  async _openDicomweb({ dicomweb, onProgress, signal }) {
    const { server, headers } = this._server(dicomweb);
    const errors = [];
    const ids = new Set();
    let instances = 0;
    let listed = 0;
    let listing = Promise.resolve();
    const hooks = {
      onEvent: (m) => {
        if (m.error) {
          errors.push({ name: `instance ${m.n}`, error: m.error, code: m.code });
          return;
        }
        this._keep(m.bytes, m.id, m.meta);
        ids.add(m.id);
        instances += 1;
        const progress = { instances, bytes: m.received };
        if (instances === 1 || performance.now() - listed > 1000) {
          listed = performance.now();
          listing = listing.then(() => this._listSeries()).then(() => {
            if (onProgress) onProgress({ ...progress, series: this._seriesList(ids) });
          });
        } else if (onProgress) {
          onProgress(progress);
        }
      },
    };
    const cancel = () => { if (hooks.id) this._post('cancelRetrieve', { call: hooks.id }); };
    if (signal) signal.addEventListener('abort', cancel, { once: true });
    try {
      const pending = this._call('dicomwebRetrieve', { server, headers, study: dicomweb.study, series: dicomweb.series }, [], hooks);
      if (signal && signal.aborted) cancel();
      const retrieved = await pending;
      await listing;
      await this._listSeries();
      const out = this._seriesList(ids);
      out.errors = errors;
      out.retrieved = retrieved;
      return out;
    } finally {
      if (signal) signal.removeEventListener('abort', cancel);
    }
  }

  /**
   * STOW-RS of a DICOM file (e.g. exportSeg's bytes) to {dicomweb: {url, headers}}.
   * Resolves to {status, instances: [{uid, status: 'success' | 'warning', reason}]};
   * rejects (code 'io', or 'bad-input' for a refused request) when the server refused or
   * failed an instance, with the server's reason.
   */
  async store({ dicomweb, bytes } = {}) {
    const copy = copyOf(bytes);
    if (!copy || !copy.byteLength) throw coded('store needs the bytes of a DICOM file', 'bad-input');
    return this._call('dicomwebStore', { ...this._server(dicomweb), bytes: copy }, [copy]);
  }

  // A series by its index or its SeriesInstanceUID (every `series` argument).
  _series(series) {
    const s = typeof series === 'string' ? this.series.find((x) => x.uid === series) : Number.isInteger(series) ? this.series[series] : undefined;
    if (!s) {
      throw coded(`no series ${JSON.stringify(series)}: give an index 0..${this.series.length - 1} or a SeriesInstanceUID of an open series`, 'bad-input');
    }
    return s;
  }

  _ref(series, frame) {
    const s = this._series(series);
    const ref = s.refs[frame];
    if (!ref) throw coded(`series ${series} has frames 0..${s.frames - 1}, not ${frame}`, 'bad-input');
    return { s, id: ref[0], frame: ref[1] };
  }

  /** Run a worker operation on the image and frame behind (series, frame). */
  _onFrame(op, series, frame, args = {}) {
    const r = this._ref(series, frame);
    return this._call(op, { id: r.id, frame: r.frame, ...args });
  }

  /** Metadata of the image behind a frame (no patient identifiers). */
  meta({ series, frame }) {
    return this.metas.get(this._ref(series, frame).id);
  }

  /**
   * Pixel values of a frame: {rows, cols, channels, values: Float32Array, min, max, window?, windows}.
   * Grey frames hold modality-LUT values; colour and PALETTE COLOR frames RGB 0..255.
   * `windows` are the frame's own [{center, width, function, explanation}] (per frame in
   * Enhanced CT/MR), `window` the first as [center, width].
   */
  async pixels({ series, frame }) {
    return this._onFrame('frame', series, frame);
  }

  /**
   * A frame as the viewer shows it, 8-bit, rendered by the engine with the same rule as
   * `medfm convert --out x.png`: {rows, cols, rgba: Uint8Array(rows*cols*4), voi, window?,
   * inverted, range?, vois}. `voi` (a number) picks one of the frame's own VOIs (`vois` lists
   * them; default 0, its first window or VOI LUT table, else its min..max), `window`
   * ({center, width, function?: 'LINEAR' | 'LINEAR_EXACT' | 'SIGMOID'}) the caller's own,
   * `invert` the inversion (default: MONOCHROME1). In the result `voi` describes what was
   * applied, `window` the window used (absent for a table or colour), `range` a grey
   * frame's [min, max] modality value, `vois` the frame's own VOIs described.
   */
  async render({ series, frame = 0, voi, window, invert }) {
    return this._onFrame('render', series, frame, { view: { voi, window, invert } });
  }

  /** Encode a frame ahead of prompting (cached): {ms, cached}. */
  async encode({ series, frame }) {
    return this._onFrame('encode', series, frame);
  }

  /** Forget a frame's cached embedding (the next encode or segment encodes again). */
  async forget({ series, frame }) {
    return this._onFrame('forget', series, frame);
  }

  /** The model input of a frame: {pixels: Float32Array [3, 256, 256], scale, rows, cols, newRows, newCols}. */
  async modelInput({ series, frame }) {
    return this._onFrame('modelInput', series, frame);
  }

  /**
   * The model inputs of a series' slices by the series recipe (what `propagate` encodes),
   * in series order: [{pixels: Float32Array [3, 256, 256], scale, rows, cols, newRows,
   * newCols}] (the browser benchmark runs another engine on exactly these).
   */
  async seriesModelInputs({ series }) {
    const s = this._series(series);
    return this._call('seriesModelInputs', { refs: s.refs.flat() });
  }

  /**
   * Segment with a box [x0, y0, x1, y1] and/or points [[x, y, label]] (label 1 positive,
   * 0 negative), in pixel coordinates of the frame. Resolves to {mask: Uint8Array(rows*cols),
   * rows, cols, area, iou, lowConfidence, warnings, backend, ms, encodeMs, decodeMs, postMs}:
   * `iou` the predicted IoU, `lowConfidence` true below 0.9 (such masks move with small weight
   * changes: int8 ones can differ from fp32 by several percent), `warnings` what the
   * preprocessing replaced (e.g. an unusable CT window), `ms` the whole call, `decodeMs` the
   * decoder with its readback, `postMs` the upsampling and threshold.
   */
  async segment({ series, frame = 0, box, points }) {
    const request = {};
    if (box) request.box = Array.from(box, Number);
    if (points && points.length) request.points = points.map((p) => [Number(p[0]), Number(p[1]), p[2] === undefined ? 1 : Number(p[2])]);
    return this._onFrame('segment', series, frame, { request });
  }

  /**
   * Carry a prompt (box [x0, y0, x1, y1] and/or points [[x, y, label]] on frame `frame`)
   * through the series by the library's 3D recipe (docs/design.md, "Volumes"): each next
   * slice, both ways, takes the widened box of the previous mask. `extent` (slices each
   * way) runs a fixed range; without it a direction ends at an empty mask or a predicted
   * IoU below `minIou` (default 0.5). Slices are encoded once per series recipe (a new box
   * re-runs only the decoder). `onProgress({frame, mask, area, iou, encodeMs, done, total})` sees each
   * mask as it is computed; `signal.abort()` stops after the slice in progress (the result
   * then holds the masks so far, `stopped` 'cancelled'). Resolves to {slices: [{frame,
   * mask, area, iou}] in series order, stopped: [up, down] ('series-end', 'extent',
   * 'empty-mask', 'low-iou', 'cancelled'), voxels, volumeMl (null without a spacing),
   * warnings, ms}.
   */
  async propagate({ series, frame = 0, box, points, extent, minIou, onProgress, signal } = {}) {
    const r = this._ref(series, frame);
    const request = {};
    if (box) request.box = Array.from(box, Number);
    if (points && points.length) request.points = points.map((p) => [Number(p[0]), Number(p[1]), p[2] === undefined ? 1 : Number(p[2])]);
    if (extent !== undefined && extent !== null) request.extent = Number(extent);
    if (minIou !== undefined && minIou !== null) request.minIou = Number(minIou);
    const masks = new Map();
    let done = 0;
    const hooks = {
      onEvent: (m) => {
        done += 1;
        if (!m.kept) return;
        const slice = { frame: m.slice, mask: m.mask, area: m.area, iou: m.iou };
        masks.set(m.slice, slice);
        if (onProgress) onProgress({ ...slice, encodeMs: m.encodeMs, done, total: r.s.frames });
      },
    };
    const cancel = () => { if (hooks.id) this._post('cancelPropagate', { call: hooks.id }); };
    if (signal) signal.addEventListener('abort', cancel, { once: true });
    try {
      const pending = this._call('propagate', { refs: r.s.refs.flat(), start: frame, request }, [], hooks);
      if (signal && signal.aborted) cancel();
      const out = await pending;
      out.slices = out.slices.map((k) => masks.get(k.slice));
      return out;
    } finally {
      if (signal) signal.removeEventListener('abort', cancel);
    }
  }

  /** Volume in mL of `voxels` voxels of a series (its spacing by the library's rule; null when it has none). */
  async volumeMl({ series, voxels }) {
    const s = this._series(series);
    return this._call('volumeMl', { refs: s.refs.flat(), voxels });
  }

  /**
   * DICOM SEG (Part 10 bytes). One mask over a frame: {series, frame, mask, label}. Several
   * segments over a series, in one SEG: {series, segments: [{label, color?: [r, g, b],
   * masks: [{frame, mask}]}]} (segments numbered in order, each with its frames; colour
   * as RecommendedDisplayCIELabValue).
   */
  async exportSeg({ series, frame = 0, mask, label = 'Segment 1', segments }) {
    if (!segments) return this._onFrame('seg', series, frame, { mask, label });
    const { spec, masks } = this._segments(series, segments);
    return this._call('segSegments', { segments: spec, masks }, [masks.buffer]);
  }

  // Segments as the engine takes them: [{label, color?, refs: [[id, frame]]}] and every
  // mask back to back (each segment's in frame order).
  _segments(series, segments) {
    const s = this._series(series);
    const spec = [];
    const parts = [];
    for (const seg of segments) {
      const masks = [...seg.masks].sort((a, b) => a.frame - b.frame);
      if (!masks.length) throw coded(`segment ${seg.label} has no mask`, 'bad-input');
      spec.push({
        label: String(seg.label),
        ...(seg.color ? { color: Array.from(seg.color, Number) } : {}),
        refs: masks.map((m) => this._ref(series, m.frame)).map((r) => [r.id, r.frame]),
      });
      parts.push(...masks.map((m) => m.mask));
    }
    const all = new Uint8Array(parts.reduce((n, m) => n + m.length, 0));
    let at = 0;
    for (const m of parts) {
      all.set(m, at);
      at += m.length;
    }
    return { spec, masks: all };
  }

  /**
   * NIfTI-1 (.nii bytes) of a series (modality values, DICOM geometry); with `segments`
   * (as exportSeg takes them) the label map instead: voxel = segment number (1, 2, ...),
   * the later segment where two overlap, over the same grid and header.
   */
  async exportNifti({ series, segments }) {
    const s = this._series(series);
    const ids = [...new Set(s.refs.map(([id]) => id))];
    if (!segments) return this._call('nifti', { ids });
    const { spec, masks } = this._segments(series, segments);
    return this._call('niftiLabels', { ids, segments: spec, masks }, [masks.buffer]);
  }

  /** 256-d L2-normalised embedding of a frame (pooled LiteMedSAM encoder output; kept by the engine). */
  async embed({ series, frame = 0 }) {
    return this._onFrame('embed', series, frame);
  }

  /**
   * The k frames most similar (cosine, computed by the engine) to a frame among the
   * frames embedded so far (embed them first, e.g. with embedAll). Resolves to
   * [{series, frame, score}], best first.
   */
  async similar({ series, frame = 0, k = 5 }) {
    const hits = await this._onFrame('similar', series, frame, { k });
    return hits
      .map((h) => ({ at: this._where.get(`${h.id}:${h.frame}`), score: h.score }))
      .filter((h) => h.at)
      .map((h) => ({ series: h.at[0], frame: h.at[1], score: h.score }));
  }

  /** Embed every frame of every open series; `onProgress(done, total)`; stop with signal.abort(). */
  async embedAll({ onProgress, signal } = {}) {
    const all = this.series.flatMap((s) => Array.from({ length: s.frames }, (_, f) => [s.index, f]));
    let done = 0;
    for (const [series, frame] of all) {
      if (signal && signal.aborted) break;
      await this.embed({ series, frame });
      done += 1;
      if (onProgress) onProgress(done, all.length);
    }
    return done;
  }

  /** Test hook: make the engine panic (checks that a crash is survived). */
  async panicForTest() {
    return this._post('panicForTest', {});
  }

  /** Stop the worker. */
  terminate() {
    this.worker.terminate();
  }
}
