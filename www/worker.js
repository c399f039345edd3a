// medfm inference worker (module worker). Owns the wasm engine: opened DICOM images,
// the model on WebGPU or CPU, the embedding cache. The UI thread never runs the model.
//
// Protocol: the page posts {id, op, args}; the worker answers {id, ok, result} or
// {id, ok: false, error, code} (code: the engine's kind of error, see medfm.js), and posts {event: 'progress', ...} while loading weights and
// {event: 'crashed', error} if the wasm instance died (a Rust panic: every later call
// would fail, so the page starts a fresh worker). A propagation posts {event: 'slice',
// call, ...} for each mask as it is computed; {op: 'cancelPropagate', args: {call}} (not queued
// behind model calls) stops it after the slice in progress.
//
// DICOMweb (the PACS panel, medfm.open({dicomweb})): the worker itself fetches, so a
// retrieved instance goes from the network into the engine without a detour; a retrieve
// posts {event: 'instance', call, id, meta, bytes, received} per instance (or {event:
// 'instance', call, error} for a part that is not DICOM) and {op: 'cancelRetrieve', args:
// {call}} aborts it. Requests are `no-store` (nothing in the HTTP cache) and refuse
// redirects; the caller's headers (credentials) are sent and never kept.
import init, {
  Engine, MultipartParser, dicomwebHttpError, dicomwebParse, dicomwebUrl, panicForTest, pinnedSha256,
  pixelsToDicom, setSpanListener, sha256Hex, softwareAdapter, stowBody,
} from '../medfm-wasm.js';

const WEIGHTS_CACHE = 'medfm-weights-v1';
let engine = null;
let crashed = null;
let queue = Promise.resolve();
const cancelled = new Set(); // ids of propagate calls to stop
const retrieving = new Map(); // id of a DICOMweb retrieve -> its AbortController
const ready = init().then(() => {
  engine = new Engine();
  // The library's spans (read, decode, preprocess, encode, decode_mask, write), timed.
  setSpanListener((name, ms) => progress('span', { name, ms }));
});

function progress(stage, extra) {
  self.postMessage({ event: 'progress', stage, ...extra });
}

// The weights' bytes, checked against the sha256 pinned in this build (compiled into the
// engine): `source` is {bytes} (the caller's) or {url}. A URL's file comes from the Cache
// API when present and intact, else it is downloaded (with progress) and cached for the
// next visit. Any other file (stale, foreign, truncated) is refused with both hashes.
const MAX_WEIGHTS = 1 << 30;
async function weightsBytes(source, precision) {
  const t0 = performance.now();
  const pinned = pinnedSha256(precision); // refuses a name that is not a precision
  const refuse = (sha, what) => coded(`${what}: sha256 ${sha} is not the ${precision} weights this build of medfm runs (${pinned}): a truncated download, or stale or foreign weights`, 'weights');
  if (source.bytes) {
    const bytes = new Uint8Array(source.bytes);
    const sha = sha256Hex(bytes);
    if (sha !== pinned) throw refuse(sha, 'the weights given');
    progress('download', { loaded: bytes.length, total: bytes.length, cached: true, ms: performance.now() - t0 });
    return bytes;
  }
  const url = source.url;
  // No Cache API outside secure contexts (plain http on another host than localhost).
  const cache = typeof caches === 'undefined' ? null : await caches.open(WEIGHTS_CACHE);
  const hit = cache && (await cache.match(url));
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    if (sha256Hex(bytes) === pinned) {
      progress('download', { loaded: bytes.length, total: bytes.length, cached: true, ms: performance.now() - t0 });
      return bytes;
    }
    await cache.delete(url); // stale or corrupted: fetch again
  }
  let resp;
  try {
    resp = await fetch(url);
  } catch (e) {
    throw coded(`cannot download the weights ${url}: ${e.message} (offline?)`, 'io');
  }
  if (!resp.ok) throw coded(`cannot download the weights ${url}: HTTP ${resp.status}`, 'weights');
  // Content-Length is the compressed size when the server sends the file gzip- or
  // brotli-encoded: it sizes the progress only, never the buffer.
  const declared = resp.headers.get('content-encoding') ? 0 : Number(resp.headers.get('content-length')) || 0;
  const chunks = [];
  let loaded = 0;
  const reader = resp.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    loaded += value.length;
    if (loaded > MAX_WEIGHTS) {
      await reader.cancel();
      throw coded(`${url} is over ${MAX_WEIGHTS} bytes: not LiteMedSAM weights`, 'weights');
    }
    chunks.push(value);
    progress('download', { loaded, total: Math.max(declared, loaded), cached: false });
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  const sha = sha256Hex(bytes);
  if (sha !== pinned) throw refuse(sha, url);
  if (cache) await cache.put(url, new Response(bytes));
  progress('download', { loaded, total: loaded, cached: false, ms: performance.now() - t0 });
  return bytes;
}

// The WebGPU adapter: {ok, software?: reason, name}. A software adapter (SwiftShader,
// WARP, a fallback adapter) is passed over by 'auto' (the CPU path is much faster there),
// by the same rule as the native command (pipeline::device, through the engine).
async function probeWebGpu() {
  try {
    const adapter = self.navigator.gpu && (await self.navigator.gpu.requestAdapter());
    if (!adapter) return { ok: false, reason: 'no WebGPU adapter' };
    const info = adapter.info || {};
    const name = [info.device, info.description].filter(Boolean).join(' ');
    const facts = {
      isFallbackAdapter: !!(info.isFallbackAdapter || adapter.isFallbackAdapter),
      name,
      driver: [info.vendor, info.architecture].filter(Boolean).join(' '),
    };
    return { ok: true, software: softwareAdapter(facts) || null, name: name || info.vendor || 'WebGPU adapter' };
  } catch (e) {
    return { ok: false, reason: String(e.message || e) };
  }
}

function coded(message, code) {
  const e = new Error(message);
  e.code = code;
  return e;
}

const pathOf = (url) => new URL(url).pathname;

// One DICOMweb request: the response, or the library's error for a refused one (the
// server's status and message, as the CLI says it). `ok` lists extra statuses that carry
// an answer (a STOW-RS 409 has the per-instance results).
async function dicomwebFetch(method, url, headers, accept, { body, signal, ok = [] } = {}) {
  let r;
  try {
    r = await fetch(url, {
      method,
      headers: { ...headers, Accept: accept },
      body,
      signal,
      cache: 'no-store',
      // Credentials given by the caller replace the browser's own: no cookies, and no
      // browser login dialog on a 401 (the panel shows the error instead). Without them a
      // same-origin proxy's session cookie still goes along.
      credentials: Object.keys(headers || {}).some((k) => k.toLowerCase() === 'authorization') ? 'omit' : 'same-origin',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
    });
  } catch (e) {
    if (signal && signal.aborted) throw coded(`${method} ${pathOf(url)}: cancelled`, 'io');
    throw coded(`${method} ${pathOf(url)}: the server could not be reached (${e.message}): is it running and the URL right? A server of another origin must allow this app (CORS) and be in this app's Content-Security-Policy (connect-src)`, 'io');
  }
  if (!r.ok && !ok.includes(r.status)) {
    const text = new Uint8Array(await r.arrayBuffer().catch(() => new ArrayBuffer(0)));
    throw dicomwebHttpError(method, url, r.status, text);
  }
  return r;
}

const ops = {
  async loadModel({ backend, precision, weights }) {
    const bytes = await weightsBytes(weights, precision).catch((e) => {
      e.code = e.code || 'weights';
      throw e;
    });
    let name = backend;
    let fallback = null;
    let adapter = null;
    if (backend === 'auto') {
      adapter = await probeWebGpu();
      name = adapter.ok && !adapter.software ? 'webgpu' : 'cpu';
      if (adapter.software) fallback = `${adapter.software}; the CPU path is faster here (choose WebGPU to force it)`;
    }
    const t0 = performance.now();
    progress('init', { backend: name });
    try {
      await engine.loadModel(name, bytes);
    } catch (e) {
      if (backend !== 'auto' || name === 'cpu' || crashed) throw e;
      fallback = String(e.message || e);
      name = 'cpu';
      await engine.loadModel(name, bytes);
    }
    progress('init', { backend: name, ms: performance.now() - t0 });
    return { backend: name, precision, fallback, software: !!(adapter && adapter.software) };
  },
  open: ({ bytes }) => engine.open(new Uint8Array(bytes)),
  // A viewer's decoded pixels as DICOM instances (one per frame), opened by the page.
  pixelsToDicom({ spec, data }) {
    const files = pixelsToDicom(spec, data);
    return { result: files, transfer: files.map((f) => f.buffer) };
  },
  close: ({ id }) => engine.close(id),
  frame({ id, frame }) {
    const f = engine.frame(id, frame);
    return { result: f, transfer: [f.values.buffer] };
  },
  render({ id, frame, view }) {
    const r = engine.render(id, frame, view);
    return { result: r, transfer: [r.rgba.buffer] };
  },
  series: () => engine.series(),
  encode: ({ id, frame }) => engine.encode(id, frame),
  forget: ({ id, frame }) => engine.forget(id, frame),
  modelInput({ id, frame }) {
    const r = engine.modelInput(id, frame);
    return { result: r, transfer: [r.pixels.buffer] };
  },
  async segment({ id, frame, request }) {
    const r = await engine.segment(id, frame, request);
    return { result: r, transfer: [r.mask.buffer] };
  },
  embed: ({ id, frame }) => engine.embed(id, frame),
  similar: ({ id, frame, k }) => engine.similar(id, frame, k),
  seg: ({ id, frame, mask, label }) => engine.seg(id, frame, mask, label),
  segSegments: ({ segments, masks }) => engine.segSegments(segments, masks),
  volumeMl: ({ refs, voxels }) => engine.volumeMl(Uint32Array.from(refs), voxels),
  seriesModelInputs({ refs }) {
    const r = engine.seriesModelInputs(Uint32Array.from(refs));
    return { result: r, transfer: r.map((x) => x.pixels.buffer) };
  },
  // One slice per engine call; the event loop turns between slices so that a cancel
  // message is seen within one slice.
  async propagate({ refs, start, request }, call) {
    engine.propagateBegin(Uint32Array.from(refs), start, request);
    for (;;) {
      if (cancelled.delete(call)) engine.propagateCancel();
      const step = await engine.propagateStep();
      if (!step) break;
      self.postMessage({ event: 'slice', call, ...step }, step.mask ? [step.mask.buffer] : []);
      await new Promise((r) => setTimeout(r, 0));
    }
    cancelled.delete(call);
    return engine.propagateEnd();
  },
  cancelPropagate({ call }) {
    cancelled.add(call);
    return true;
  },
  // QIDO-RS: {server, headers, what: 'studies' | 'series' | 'instances', study, series, query}.
  async dicomwebSearch({ server, headers, what, study, series, query }) {
    const url = dicomwebUrl(server, what, study, series, query);
    const r = await dicomwebFetch('GET', url, headers, 'application/dicom+json');
    if (r.status === 204) return [];
    return dicomwebParse(what, new Uint8Array(await r.arrayBuffer()));
  },
  // WADO-RS of a study or series, streamed: each instance is opened as its part completes.
  async dicomwebRetrieve({ server, headers, study, series }, call) {
    const url = dicomwebUrl(server, 'retrieve', study, series);
    const abort = new AbortController();
    retrieving.set(call, abort);
    let parser = null;
    try {
      const r = await dicomwebFetch('GET', url, headers, 'multipart/related; type="application/dicom"; transfer-syntax=*', { signal: abort.signal });
      parser = new MultipartParser(r.headers.get('content-type') || '');
      const reader = r.body.getReader();
      let n = 0;
      let received = 0;
      let stopped = null;
      const t0 = performance.now();
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (e) {
          if (abort.signal.aborted) {
            stopped = 'cancelled';
            break;
          }
          throw coded(`GET ${pathOf(url)}: truncated response: the connection failed after ${n} instance(s): ${e.message}`, 'io');
        }
        if (chunk.done) break;
        received += chunk.value.length;
        for (const part of parser.feed(chunk.value)) {
          n += 1;
          try {
            const { id, meta } = engine.open(part);
            self.postMessage({ event: 'instance', call, id, meta, bytes: part.buffer, received }, [part.buffer]);
          } catch (e) {
            self.postMessage({ event: 'instance', call, n, error: String(e.message || e), code: e.code || 'bad-input' });
          }
        }
      }
      if (!stopped) {
        try {
          parser.finish();
        } catch (e) {
          throw coded(`GET ${pathOf(url)}: ${e.message} (${n} instance(s) received)`, 'io');
        }
      }
      return { instances: n, bytes: received, stopped, ms: performance.now() - t0 };
    } finally {
      retrieving.delete(call);
      if (parser) parser.free();
    }
  },
  cancelRetrieve({ call }) {
    const a = retrieving.get(call);
    if (a) a.abort();
    return !!a;
  },
  // STOW-RS of one DICOM file: {status, instances: [{uid, status, reason}]}.
  async dicomwebStore({ server, headers, bytes }) {
    const url = dicomwebUrl(server, 'stow');
    const { contentType, body } = stowBody([new Uint8Array(bytes)]);
    const r = await dicomwebFetch('POST', url, { ...headers, 'Content-Type': contentType }, 'application/dicom+json', { body, ok: [409] });
    const instances = dicomwebParse('stow', new Uint8Array(await r.arrayBuffer()));
    const failed = instances.filter((i) => i.status === 'failure');
    if (failed.length || !instances.length) {
      const why = failed.length
        ? failed.map((i) => `${i.uid} failed (reason ${i.reason || 'not given'})`).join('; ')
        : 'the server reported no stored instance';
      throw coded(`POST ${pathOf(url)}: HTTP ${r.status}: ${why}`, 'io');
    }
    return { status: r.status, instances };
  },
  nifti: ({ ids }) => engine.nifti(Uint32Array.from(ids)),
  niftiLabels: ({ ids, segments, masks }) => engine.niftiLabels(Uint32Array.from(ids), segments, masks),
  panicForTest: () => panicForTest(),
};

async function handle(op, args, id) {
  await ready;
  if (crashed) throw new Error(`the engine stopped after an internal error: ${crashed}`);
  const fn = ops[op];
  if (!fn) throw new Error(`unknown operation ${op}`);
  const out = await fn(args || {}, id);
  return out && out.transfer ? out : { result: out };
}

// Model calls run one after another; reading files and frames does not wait for them
// (the engine holds no borrow across an await, so they may interleave safely).
const UNQUEUED = new Set(['open', 'pixelsToDicom', 'frame', 'close', 'render', 'series', 'cancelPropagate', 'volumeMl',
  'dicomwebSearch', 'dicomwebRetrieve', 'cancelRetrieve', 'dicomwebStore']);

self.onmessage = (ev) => {
  const { id, op, args } = ev.data;
  const run = UNQUEUED.has(op) ? handle(op, args, id) : queue.then(() => handle(op, args, id));
  if (!UNQUEUED.has(op)) queue = run.catch(() => {});
  run
    .then(
      ({ result, transfer }) => self.postMessage({ id, ok: true, result }, transfer || []),
      (e) => {
        const error = String((e && e.message) || e);
        // A trapped wasm instance (Rust panic) cannot be used again.
        if (e instanceof WebAssembly.RuntimeError && !crashed) {
          crashed = error;
          self.postMessage({ event: 'crashed', error });
        }
        self.postMessage({ id, ok: false, error, code: (e && e.code) || 'internal' });
      },
    );
};
