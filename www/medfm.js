// medfm JS API: LiteMedSAM segmentation and embeddings of DICOM images, computed in a
// Web Worker on WebGPU or the CPU (wasm). Nothing leaves the page: weights and samples
// come from the app's own origin; images come from the user's files.
//
//   const medfm = await MedFM.create({ backend: 'auto' | 'webgpu' | 'cpu' });
//   const series = await medfm.open(filesOrUrls);      // File, Blob, ArrayBuffer or URL
//   const r = await medfm.segment({ series: 0, frame: 0, box: [x0, y0, x1, y1],
//                                   points: [[x, y, 1]] });
//   // r = { mask: Uint8Array(rows*cols), rows, cols, area, iou, lowConfidence, warnings, backend, ms }
//   await medfm.setBackend('cpu');

const BASE = new URL('..', import.meta.url).href; // the app root (www/ is one level down)

// The bytes of an open() item, always a fresh ArrayBuffer of ours: it is transferred to
// the worker, and the caller's buffer must stay usable (a transfer would detach it).
async function toBytes(x) {
  if (x instanceof ArrayBuffer) return x.slice(0);
  if (ArrayBuffer.isView(x)) return x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength);
  if (typeof Blob !== 'undefined' && x instanceof Blob) return x.arrayBuffer();
  if (typeof x === 'string' || x instanceof URL) {
    const url = new URL(x, location.href);
    if (url.origin !== location.origin) {
      throw new Error(`refusing to fetch ${url.href}: only this app's origin is allowed`);
    }
    // No redirects (a same-origin URL must not hand the request to another origin) and no
    // HTTP cache (patient data is not kept on disk).
    let r;
    try {
      r = await fetch(url, { redirect: 'manual', cache: 'no-store', credentials: 'same-origin' });
    } catch (e) {
      throw new Error(`cannot load ${url.href}: ${e.message} (offline?)`);
    }
    if (r.type === 'opaqueredirect' || (r.status >= 300 && r.status < 400)) {
      throw new Error(`refusing ${url.href}: it redirects elsewhere; only this app's origin is allowed`);
    }
    if (r.url && new URL(r.url).origin !== location.origin) {
      throw new Error(`refusing ${url.href}: it was answered by ${new URL(r.url).origin}; only this app's origin is allowed`);
    }
    if (!r.ok) throw new Error(`cannot load ${url.href}: HTTP ${r.status}`);
    return r.arrayBuffer();
  }
  throw new Error('open() takes File, Blob, ArrayBuffer, typed array or same-origin URL');
}

export class MedFM extends EventTarget {
  /**
   * Start the worker and load the model. Options: backend ('auto' default: WebGPU when
   * the adapter is a real GPU, else CPU: a software adapter such as SwiftShader is passed
   * over, with the reason in `info.fallback`; 'webgpu' forces the adapter), precision
   * ('int8' default, 'fp32').
   * Emits 'progress' events ({detail: {stage, loaded, total, ms, backend}}).
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
    this.info = null; // {backend, precision, fallback}
    this.series = []; // [{uid, modality, description, rows, cols, frames, refs: [[imageId, frame]], imageIds}]
    this.files = []; // bytes of every opened file (to reopen after a worker restart)
    this.panics = 0;
    this._embeddings = new Map();
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
      else p.reject(new Error(msg.error));
    };
    this.worker.onerror = (ev) => {
      const err = new Error(`worker failed: ${ev.message || 'unknown error'}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }

  async _call(op, args, transfer = []) {
    // A crashed engine (a Rust panic traps its wasm instance) is replaced before the next
    // call: a fresh worker on the CPU with the open files reloaded.
    if (this.crashed && op !== 'loadModel') await this._recover();
    return this._post(op, args, transfer);
  }

  async _recover() {
    const reason = this.crashed;
    this.crashed = null;
    this.worker.terminate();
    this._startWorker();
    this.info = await this._post('loadModel', { backend: 'cpu', precision: this.precision, base: BASE });
    this.info.fallback = `the ${this.requested} engine stopped (${reason}); restarted on the CPU`;
    this._embeddings.clear();
    await this._reopen();
    this.dispatchEvent(new CustomEvent('recovered', { detail: this.info }));
  }

  _post(op, args, transfer = []) {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, args }, transfer);
    });
  }

  /** The backend in use: 'webgpu' or 'cpu'. */
  get backend() {
    return this.info && this.info.backend;
  }

  /**
   * Switch backend ('auto' | 'webgpu' | 'cpu') and/or precision ('int8' | 'fp32').
   * A WebGPU failure under 'auto' falls back to CPU (reason in `info.fallback`). If the
   * engine crashed, a fresh worker is started on the CPU and the open files reloaded.
   */
  async setBackend(name, precision = this.precision) {
    if (!['auto', 'webgpu', 'cpu'].includes(name)) throw new Error(`unknown backend ${name}: use auto, webgpu or cpu`);
    if (!['int8', 'fp32'].includes(precision)) throw new Error(`unknown precision ${precision}: use int8 or fp32`);
    this.requested = name;
    this.precision = precision;
    if (this.crashed) await this._recover();
    try {
      this.info = await this._post('loadModel', { backend: name, precision, base: BASE });
    } catch (e) {
      if (!this.crashed || name === 'cpu') throw e;
      // The wasm instance died (e.g. a WebGPU driver problem): start over on the CPU.
      await this._recover();
    }
    this._embeddings.clear();
    return this.info;
  }

  async _reopen() {
    const files = this.files;
    const old = this.series;
    this.files = [];
    this.series = [];
    for (const bytes of files) await this._openOne(bytes.slice(0), true);
    if (this.series.length !== old.length) throw new Error('reopening the files after a restart gave different series');
  }

  async _openOne(bytes, recovering = false) {
    const copy = bytes.slice(0);
    const { id, meta } = await (recovering ? this._post : this._call).call(this, 'open', { bytes }, [bytes]);
    this.files.push(copy);
    const key = meta.series_instance_uid || `image-${id}`;
    let s = this.series.find((x) => x.uid === key);
    if (!s) {
      s = {
        index: this.series.length,
        uid: key,
        study: meta.study_instance_uid,
        modality: meta.modality,
        description: meta.series_description,
        rows: meta.rows,
        cols: meta.cols,
        frames: 0,
        images: [],
        refs: [],
      };
      this.series.push(s);
    }
    s.images.push({ id, meta });
    // Multi-frame images contribute their frames; single-frame instances are stacked
    // by Instance Number.
    s.images.sort((a, b) => (a.meta.instance_number ?? 0) - (b.meta.instance_number ?? 0));
    s.refs = s.images.flatMap((im) => Array.from({ length: im.meta.frames }, (_, f) => [im.id, f]));
    s.frames = s.refs.length;
    return s;
  }

  /**
   * Open DICOM files (File/Blob/ArrayBuffer/typed array/same-origin URL). Files that are
   * not DICOM are reported in `errors` and skipped. Resolves to the series list
   * [{index, uid, study, modality, description, rows, cols, frames}] plus `errors`.
   */
  async open(filesOrUrls) {
    const list = Array.isArray(filesOrUrls) || filesOrUrls instanceof FileList ? Array.from(filesOrUrls) : [filesOrUrls];
    const errors = [];
    for (const item of list) {
      const name = item.name || String(item);
      try {
        await this._openOne(await toBytes(item));
      } catch (e) {
        errors.push({ name, error: e.message });
      }
    }
    const out = this.series.map(({ index, uid, study, modality, description, rows, cols, frames }) => ({
      index, uid, study, modality, description, rows, cols, frames,
    }));
    out.errors = errors;
    return out;
  }

  _ref(series, frame) {
    const s = this.series[series];
    if (!s) throw new Error(`no series ${series} (have ${this.series.length})`);
    const ref = s.refs[frame];
    if (!ref) throw new Error(`series ${series} has frames 0..${s.frames - 1}, not ${frame}`);
    return { s, id: ref[0], frame: ref[1] };
  }

  /** Run a worker operation on the image and frame behind (series, frame). */
  _onFrame(op, series, frame, args = {}) {
    const r = this._ref(series, frame);
    return this._call(op, { id: r.id, frame: r.frame, ...args });
  }

  /** Metadata of the image behind a frame (no patient identifiers). */
  meta({ series, frame }) {
    const { s, id } = this._ref(series, frame);
    return s.images.find((im) => im.id === id).meta;
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

  /** Encode a frame ahead of prompting (cached): {ms, cached}. */
  async encode({ series, frame }) {
    return this._onFrame('encode', series, frame);
  }

  /** Forget a frame's cached embedding (the next encode or segment encodes again). */
  async forget({ series, frame }) {
    return this._onFrame('forget', series, frame);
  }

  /** The model input of a frame: {pixels: Float32Array [3, 256, 256], scale, rows, cols}. */
  async modelInput({ series, frame }) {
    return this._onFrame('modelInput', series, frame);
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

  /** DICOM SEG (Part 10 bytes) of a mask over a frame. */
  async exportSeg({ series, frame = 0, mask, label = 'Segment 1' }) {
    return this._onFrame('seg', series, frame, { mask, label });
  }

  /** NIfTI-1 (.nii bytes) of a series of single-frame images (modality values, DICOM geometry). */
  async exportNifti({ series }) {
    const s = this.series[series];
    if (!s) throw new Error(`no series ${series}`);
    return this._call('nifti', { ids: s.images.map((im) => im.id) });
  }

  /** 256-d L2-normalised embedding of a frame (pooled LiteMedSAM encoder output). */
  async embed({ series, frame = 0 }) {
    const key = `${series}:${frame}`;
    if (!this._embeddings.has(key)) {
      this._embeddings.set(key, await this._onFrame('embed', series, frame));
    }
    return this._embeddings.get(key);
  }

  /**
   * The k frames most similar (cosine) to a frame among the frames embedded so far
   * (embed them first, e.g. with embedAll). Resolves to [{series, frame, score}].
   */
  async similar({ series, frame = 0, k = 5 }) {
    const q = await this.embed({ series, frame });
    const out = [];
    for (const [key, v] of this._embeddings) {
      const [s, f] = key.split(':').map(Number);
      if (s === series && f === frame) continue;
      let dot = 0;
      for (let i = 0; i < v.length; i++) dot += v[i] * q[i];
      out.push({ series: s, frame: f, score: dot });
    }
    out.sort((a, b) => b.score - a.score);
    return out.slice(0, k);
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
