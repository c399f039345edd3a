// The medfm viewer: open DICOM, scroll, window/level, prompt LiteMedSAM, export.
// It uses only the public JS API (www/medfm.js), exposed as window.medfm.
import { MedFM } from './medfm.js';
import { Display } from './display.js';
import { $, PRESETS, COLORS, params, app, status, fmtMs } from './state.js';
import { installExport } from './export.js';
import { installPacs, pacsLoad } from './pacs.js';

// For integrators and tests: open items as the file picker does; go to a slice.
app.openItems = (items) => openItems(items);
app.showFrame = (series, frame) => showFrame(series, frame);

function frameKey() {
  return `${app.cur.series}:${app.cur.frame}`;
}

function showTimings() {
  const t = app.timings;
  const parts = [];
  if (t.download) parts.push(`weights ${t.download}`);
  if (t.init) parts.push(`init ${t.init}`);
  if (t.encode) parts.push(`first encode ${t.encode}`);
  if (t.decode) parts.push(`last decode ${t.decode}`);
  $('timings').textContent = parts.join(' · ');
}

function onProgress(ev) {
  const d = ev.detail;
  if (d.stage === 'download') {
    $('progress').max = d.total || 1;
    $('progress').value = d.loaded || 0;
    status(`Weights: ${(d.loaded / 1e6).toFixed(1)} / ${(d.total / 1e6).toFixed(1)} MB${d.cached ? ' (cached)' : ''}`);
    if (d.ms !== undefined) app.timings.download = `${fmtMs(d.ms)}${d.cached ? ' (cache)' : ''}`;
  } else if (d.stage === 'init') {
    status(`Starting the model on ${d.backend}…`);
    if (d.ms !== undefined) app.timings.init = `${d.backend} ${fmtMs(d.ms)}`;
  } else if (d.stage === 'span') {
    // The pipeline's steps as the engine times them (the last of each kind).
    app.spans = { ...app.spans, [d.name]: d.ms };
    return;
  }
  showTimings();
}

async function loadModel() {
  // ?backend=webgpu forces the WebGPU adapter even when it is a software one.
  const backend = $('force-cpu').checked ? 'cpu' : params.get('backend') === 'webgpu' ? 'webgpu' : 'auto';
  const precision = $('precision').value;
  status('Loading the model…');
  const info = await app.medfm.setBackend(backend, precision);
  $('backend').textContent = `${info.backend === 'webgpu' ? 'WebGPU' : 'CPU (wasm)'} · ${info.precision}`;
  $('backend').title = info.fallback ? `WebGPU not used: ${info.fallback}` : '';
  delete app.timings.encode;
  status(info.fallback ? `Model ready on CPU (WebGPU not used: ${info.fallback})` : `Model ready on ${info.backend}`);
  showTimings();
}

// ---------- series and frames ----------

function renderSeriesList() {
  const ul = $('series-list');
  ul.replaceChildren();
  // Grouped by study (numbered in the order opened; no patient data shown).
  const studies = [...new Set(app.series.map((s) => s.study || ''))];
  const ordered = [...app.series].sort((a, b) => studies.indexOf(a.study || '') - studies.indexOf(b.study || '') || a.index - b.index);
  let lastStudy = null;
  for (const s of ordered) {
    if ((s.study || '') !== lastStudy) {
      lastStudy = s.study || '';
      const head = document.createElement('li');
      head.className = 'study';
      head.textContent = `Study ${studies.indexOf(lastStudy) + 1}`;
      ul.append(head);
    }
    const li = document.createElement('li');
    li.textContent = `${s.modality || '?'} · ${s.description || 'series ' + (s.index + 1)} · ${s.cols}×${s.rows} · ${s.frames} frame${s.frames > 1 ? 's' : ''}`;
    li.dataset.series = s.index;
    li.classList.toggle('current', s.index === app.cur.series);
    li.addEventListener('click', () => showFrame(s.index, 0));
    ul.append(li);
  }
}

async function openItems(items) {
  status('Reading files…');
  const list = await app.medfm.open(items);
  app.series = app.medfm.list();
  renderSeriesList();
  if (list.errors.length) {
    status(`Skipped ${list.errors.length} file(s): ${list.errors.map((e) => `${e.name}: ${e.error}`).join('; ')}`, true);
  } else {
    status(`${list.length} series open`);
  }
  if (app.cur.series < 0 && list.length) await showFrame(list[0].index, 0);
}

async function showFrame(series, frame, { keepView = false } = {}) {
  const s = app.series[series];
  if (!s) return;
  frame = Math.max(0, Math.min(s.frames - 1, frame));
  const changedSeries = series !== app.cur.series;
  app.cur = { series, frame };
  app.meta = app.medfm.meta({ series, frame });
  if (changedSeries && !keepView) app.wl = { window: null, invert: undefined };
  await renderFrame();
  if (changedSeries && !keepView) {
    app.display.fit();
    app.display.render();
  }
  renderOverlay();
  renderSeriesList();
  updateInfo();
}

// Render the current frame with the current window and show it. Calls while one is in
// flight are coalesced: the last state wins (a window/level drag sends many).
function renderFrame() {
  if (app.rendering) {
    app.renderAgain = true;
    return app.rendering;
  }
  app.rendering = (async () => {
    do {
      app.renderAgain = false;
      const { series, frame } = app.cur;
      const w = app.wl.window;
      const r = await app.medfm.render({ series, frame, window: w || undefined, invert: app.wl.invert });
      if (series !== app.cur.series || frame !== app.cur.frame) app.renderAgain = true;
      app.rendered = r;
      app.display.setImage(r);
      app.display.render();
      updateInfo();
    } while (app.renderAgain);
  })().finally(() => { app.rendering = null; });
  return app.rendering;
}
// Resolves when the display shows the current state (tests).
app.renderDone = async () => { while (app.rendering) await app.rendering; };

// The window a window/level drag starts from: the one shown, else (a VOI LUT table, a
// colour frame) the frame's range.
function currentWindow() {
  const r = app.rendered;
  if (r && r.window) return { center: r.window.center, width: r.window.width, function: r.window.function };
  const [lo, hi] = (r && r.range) || [0, 255];
  return { center: (lo + hi) / 2, width: Math.max(hi - lo, 1), function: 'LINEAR' };
}

function resetView() {
  app.wl = { window: null, invert: undefined };
  app.display.fit();
  renderFrame();
  updateInfo();
}

function updateInfo() {
  const v = app.display.view;
  const s = app.series[app.cur.series];
  const m = app.meta || {};
  const r = app.rendered;
  $('info').textContent = [
    `${m.modality || ''} ${s ? s.description || '' : ''}`.trim(),
    s ? `frame ${app.cur.frame + 1}/${s.frames} · ${s.cols}×${s.rows}` : '',
    r ? `${r.window ? `W ${Math.round(r.window.width)} L ${Math.round(r.window.center)}` : r.voi}${r.inverted ? ' · inverted' : ''}` : '',
    `zoom ${v.zoom.toFixed(2)}`,
  ].filter(Boolean).join('\n');
}

// ---------- segments, prompts, masks ----------

function addSegment(name) {
  const i = app.segments.length;
  app.segments.push({ name: name || `Segment ${i + 1}`, color: COLORS[i % COLORS.length], prompts: new Map(), results: new Map(), volumes: new Map() });
  app.active = i;
  renderSegments();
}

function renderSegments() {
  const ul = $('segments');
  ul.replaceChildren();
  app.segments.forEach((seg, i) => {
    const li = document.createElement('li');
    const sw = document.createElement('span');
    sw.className = 'swatch';
    sw.style.background = `rgb(${seg.color.join(',')})`;
    const r = seg.results.get(frameKey());
    const ml = seg.volumes.get(app.cur.series);
    const vol = typeof ml === 'number' ? ` · ${ml.toFixed(2)} mL` : '';
    li.append(sw, ` ${seg.name}${r ? ` · ${r.area} px · IoU ${r.iou.toFixed(2)}` : ''}${vol}`);
    li.classList.toggle('current', i === app.active);
    li.addEventListener('click', () => { app.active = i; renderSegments(); renderPrompts(); });
    ul.append(li);
  });
}

function currentPrompt() {
  const seg = app.segments[app.active];
  return (seg && seg.prompts.get(frameKey())) || { box: null, points: [] };
}

function renderOverlay() {
  if (!app.rendered) return;
  const { rows, cols } = app.rendered;
  const rgba = new Uint8ClampedArray(rows * cols * 4);
  for (const seg of app.segments) {
    const r = seg.results.get(frameKey());
    if (!r || r.rows !== rows || r.cols !== cols) continue;
    for (let i = 0; i < r.mask.length; i++) {
      if (r.mask[i]) {
        rgba[i * 4] = seg.color[0];
        rgba[i * 4 + 1] = seg.color[1];
        rgba[i * 4 + 2] = seg.color[2];
        rgba[i * 4 + 3] = 255;
      }
    }
  }
  app.display.setOverlay(rgba);
  app.display.render();
  renderPrompts();
  renderSegments();
}

function renderPrompts(drag) {
  const svg = $('prompts');
  svg.replaceChildren();
  const ns = 'http://www.w3.org/2000/svg';
  const p = currentPrompt();
  const box = drag || p.box;
  if (box) {
    const [x0, y0] = app.display.toCanvas(box[0], box[1]);
    const [x1, y1] = app.display.toCanvas(box[2], box[3]);
    const r = document.createElementNS(ns, 'rect');
    r.setAttribute('x', Math.min(x0, x1));
    r.setAttribute('y', Math.min(y0, y1));
    r.setAttribute('width', Math.abs(x1 - x0));
    r.setAttribute('height', Math.abs(y1 - y0));
    r.setAttribute('class', 'box');
    svg.append(r);
  }
  for (const [x, y, label] of p.points) {
    const [cx, cy] = app.display.toCanvas(x, y);
    const c = document.createElementNS(ns, 'circle');
    c.setAttribute('cx', cx);
    c.setAttribute('cy', cy);
    c.setAttribute('r', 5);
    c.setAttribute('class', label ? 'pos' : 'neg');
    svg.append(c);
  }
}

// Apply a prompt change as an undoable action and run the decoder.
function changePrompt(next) {
  if (app.active < 0) addSegment();
  const seg = app.segments[app.active];
  const key = frameKey();
  const before = seg.prompts.get(key) || { box: null, points: [] };
  app.undo.push({ seg: app.active, key, before, after: next });
  app.redo.length = 0;
  applyPrompt(app.active, key, next);
}

let running = null;
let rerun = false;
async function applyPrompt(segIndex, key, prompt) {
  const seg = app.segments[segIndex];
  seg.prompts.set(key, prompt);
  renderPrompts();
  if (!prompt.box && !prompt.points.length) {
    seg.results.delete(key);
    renderOverlay();
    return;
  }
  if (running) {
    rerun = true; // the latest prompt wins; run again when the current call ends
    return running;
  }
  running = (async () => {
    do {
      rerun = false;
      const p = seg.prompts.get(key);
      const [series, frame] = key.split(':').map(Number);
      app.busy += 1;
      status('Segmenting…');
      try {
        const r = await app.medfm.segment({ series, frame, box: p.box, points: p.points });
        seg.results.set(key, r);
        app.lastResult = { area: r.area, iou: r.iou, lowConfidence: r.lowConfidence, warnings: r.warnings, backend: r.backend, ms: r.ms, encodeMs: r.encodeMs, rows: r.rows, cols: r.cols };
        if (r.encodeMs > 0 && !app.timings.encode) app.timings.encode = fmtMs(r.encodeMs);
        app.timings.decode = fmtMs(r.decodeMs + r.postMs);
        showTimings();
        const caution = r.lowConfidence
          ? ` · low confidence: refine the box or add points${app.medfm.precision === 'fp32' ? '' : ' (int8 masks can differ from fp32 here)'}`
          : '';
        const warned = r.warnings && r.warnings.length ? ` · ${r.warnings.join('; ')}` : '';
        status(`${seg.name}: ${r.area} px, predicted IoU ${r.iou.toFixed(2)} (${r.backend}, ${fmtMs(r.ms)})${caution}${warned}`);
      } catch (e) {
        status(`Segmentation failed: ${e.message}`, true);
      } finally {
        app.busy -= 1;
      }
    } while (rerun);
    running = null;
    await updateVolume(seg, Number(key.split(':')[0]));
    if (key === frameKey()) renderOverlay();
  })();
  return running;
}

// The segment's volume in a series: the voxels of its masks there times the series'
// spacing (the engine's rule; none for a series that is not a volume).
async function updateVolume(seg, series) {
  let voxels = 0;
  for (const [k, r] of seg.results) if (Number(k.split(':')[0]) === series) voxels += r.area;
  try {
    seg.volumes.set(series, voxels ? await app.medfm.volumeMl({ series, voxels }) : null);
  } catch (e) {
    seg.volumes.set(series, null);
  }
  renderSegments();
}

// ---------- propagation through the series ----------

// Carry the active segment's prompt on this slice through the series. Masks appear as they
// are computed; the slices it reaches get the new masks (a corrected slice propagated
// again recomputes only the decoder on slices already encoded).
async function propagate() {
  const seg = app.segments[app.active];
  const prompt = seg && seg.prompts.get(frameKey());
  if (!prompt || (!prompt.box && !prompt.points.length)) return status('Propagate: draw a box on this slice first', true);
  if (app.propagating) return status('A propagation is running (Esc or Cancel stops it)', true);
  const { series, frame } = app.cur;
  const s = app.series[series];
  const abort = new AbortController();
  app.propagating = { abort, segment: app.active, series };
  $('propagate-cancel').disabled = false;
  $('propagate-progress').max = s.frames;
  $('propagate-progress').value = 0;
  app.busy += 1;
  status(`${seg.name}: propagating through ${s.frames} slices…`);
  try {
    const r = await app.medfm.propagate({
      series, frame, box: prompt.box || undefined, points: prompt.points,
      signal: abort.signal,
      onProgress: (m) => {
        seg.results.set(`${series}:${m.frame}`, { mask: m.mask, area: m.area, iou: m.iou, rows: s.rows, cols: s.cols });
        $('propagate-progress').value = m.done;
        if (series === app.cur.series && m.frame === app.cur.frame) renderOverlay();
      },
    });
    seg.volumes.set(series, null);
    await updateVolume(seg, series);
    const ml = seg.volumes.get(series);
    app.lastPropagation = { slices: r.slices.map((x) => ({ frame: x.frame, area: x.area, iou: x.iou })), stopped: r.stopped, volumeMl: r.volumeMl, ms: r.ms };
    const range = r.slices.length ? `slices ${r.slices[0].frame + 1}–${r.slices[r.slices.length - 1].frame + 1}` : 'no slice';
    status(`${seg.name}: ${range}, ${r.voxels} voxels${typeof ml === 'number' ? `, ${ml.toFixed(2)} mL` : ''}${r.stopped[0] === 'cancelled' ? ' (cancelled)' : ''} in ${fmtMs(r.ms)}${r.warnings.length ? ` · ${r.warnings.join('; ')}` : ''}`);
  } catch (e) {
    status(`Propagation failed: ${e.message}`, true);
  } finally {
    app.busy -= 1;
    app.propagating = null;
    $('propagate-cancel').disabled = true;
    renderOverlay();
  }
}

function cancelPropagation() {
  if (app.propagating) app.propagating.abort.abort();
}

function undo() {
  const a = app.undo.pop();
  if (!a) return;
  app.redo.push(a);
  return applyPrompt(a.seg, a.key, a.before);
}

function redo() {
  const a = app.redo.pop();
  if (!a) return;
  app.undo.push(a);
  return applyPrompt(a.seg, a.key, a.after);
}

// ---------- similar frames ----------

let embedAbort = null;
async function embedAll() {
  embedAbort = new AbortController();
  $('embed-cancel').disabled = false;
  const n = await app.medfm.embedAll({
    signal: embedAbort.signal,
    onProgress: (done, total) => { $('embed-progress').max = total; $('embed-progress').value = done; },
  });
  $('embed-cancel').disabled = true;
  status(`Embedded ${n} frame(s)`);
  await showSimilar();
}

// A small picture of a frame (its default rendering), for the Similar list.
async function thumbnail(series, frame, side = 48) {
  const r = await app.medfm.render({ series, frame });
  const img = new ImageData(side, side);
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const i = Math.floor((y * r.rows) / side) * r.cols + Math.floor((x * r.cols) / side);
      img.data.set(r.rgba.subarray(i * 4, i * 4 + 4), (y * side + x) * 4);
    }
  }
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = side;
  canvas.getContext('2d').putImageData(img, 0, 0);
  return canvas;
}

async function showSimilar() {
  const list = await app.medfm.similar({ ...app.cur, k: 5 });
  const ul = $('similar');
  ul.replaceChildren();
  for (const r of list) {
    const li = document.createElement('li');
    const s = app.series[r.series];
    li.append(await thumbnail(r.series, r.frame), ` ${s.modality} ${s.description || 'series ' + (r.series + 1)} · frame ${r.frame + 1} · ${r.score.toFixed(3)}`);
    li.addEventListener('click', () => showFrame(r.series, r.frame));
    ul.append(li);
  }
  app.similar = list;
}

// ---------- input ----------

function setTool(t) {
  app.tool = t;
  $('tool-seg').classList.toggle('on', t === 'segment');
  $('tool-wl').classList.toggle('on', t === 'window');
}

function installMouse() {
  // Listeners on the viewport (the canvas fills it); coordinates are canvas-relative.
  const canvas = $('viewport');
  let drag = null;
  canvas.addEventListener('contextmenu', (e) => e.preventDefault());
  canvas.addEventListener('pointerdown', (e) => {
    canvas.setPointerCapture(e.pointerId);
    const r = canvas.getBoundingClientRect();
    drag = { button: e.button, x: e.clientX, y: e.clientY, cx: e.clientX - r.left, cy: e.clientY - r.top, shift: e.shiftKey, moved: false, view: { ...app.display.view, offset: [...app.display.view.offset] } };
  });
  canvas.addEventListener('pointermove', (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (!drag.moved) return;
    const v = app.display.view;
    if (drag.button === 2) {
      // zoom about the press point
      const z = drag.view.zoom * Math.exp(-dy / 200);
      const [ix, iy] = [(drag.cx - drag.view.offset[0]) / drag.view.zoom, (drag.cy - drag.view.offset[1]) / drag.view.zoom];
      v.zoom = z;
      v.offset = [drag.cx - ix * z, drag.cy - iy * z];
    } else if (drag.button === 1 || (drag.button === 0 && e.altKey)) {
      v.offset = [drag.view.offset[0] + dx, drag.view.offset[1] + dy];
    } else if (app.tool === 'window') {
      const w0 = drag.window || (drag.window = currentWindow());
      const scale = Math.max(w0.width, 1) / 200;
      app.wl.window = { center: w0.center + dy * scale, width: Math.max(1, w0.width + dx * scale), function: w0.function };
      renderFrame();
      return;
    } else {
      const r = canvas.getBoundingClientRect();
      const [x0, y0] = app.display.toImage(drag.cx, drag.cy);
      const [x1, y1] = app.display.toImage(e.clientX - r.left, e.clientY - r.top);
      drag.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
      renderPrompts(drag.box);
      return;
    }
    app.display.render();
    renderPrompts();
    updateInfo();
  });
  canvas.addEventListener('pointerup', (e) => {
    if (!drag) return;
    const d = drag;
    drag = null;
    if (d.button !== 0 || app.tool !== 'segment' || e.altKey || !app.rendered) return;
    const clamp = (b) => {
      const { rows, cols } = app.rendered;
      return [Math.max(0, b[0]), Math.max(0, b[1]), Math.min(cols - 1, b[2]), Math.min(rows - 1, b[3])];
    };
    const p = currentPrompt();
    if (d.moved && d.box) {
      const b = clamp(d.box);
      if (b[2] > b[0] && b[3] > b[1]) changePrompt({ box: b.map(Math.round), points: p.points });
    } else if (!d.moved) {
      const [x, y] = app.display.toImage(d.cx, d.cy);
      if (x >= 0 && y >= 0 && x < app.rendered.cols && y < app.rendered.rows) {
        changePrompt({ box: p.box, points: [...p.points, [Math.round(x), Math.round(y), d.shift ? 0 : 1]] });
      }
    }
  });
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    if (app.cur.series < 0) return;
    if (e.ctrlKey) {
      const v = app.display.view;
      v.zoom *= Math.exp(-e.deltaY / 500);
      app.display.render();
      renderPrompts();
      updateInfo();
    } else {
      showFrame(app.cur.series, app.cur.frame + Math.sign(e.deltaY));
    }
  }, { passive: false });
}

function installKeys() {
  document.addEventListener('keydown', (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    const s = app.series[app.cur.series];
    const v = app.display.view;
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z') { e.preventDefault(); undo(); return; }
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'y') { e.preventDefault(); redo(); return; }
    if (!s) return;
    switch (e.key) {
      case 'ArrowUp': e.preventDefault(); showFrame(app.cur.series, app.cur.frame - 1); break;
      case 'ArrowDown': e.preventDefault(); showFrame(app.cur.series, app.cur.frame + 1); break;
      case 'Home': e.preventDefault(); showFrame(app.cur.series, 0); break;
      case 'End': e.preventDefault(); showFrame(app.cur.series, s.frames - 1); break;
      case 'i': app.wl.invert = !(app.rendered && app.rendered.inverted); renderFrame(); break;
      case ' ': e.preventDefault(); resetView(); renderPrompts(); break;
      case 's': setTool('segment'); break;
      case 'p': propagate(); break;
      case 'Escape': cancelPropagation(); break;
      case 'w': setTool('window'); break;
      default:
        if (PRESETS[e.key]) {
          app.wl.window = { center: PRESETS[e.key][0], width: PRESETS[e.key][1], function: 'LINEAR' };
          renderFrame();
          status(`Window preset ${e.key}: ${PRESETS[e.key][2]}`);
        }
    }
  });
}

function installFiles() {
  $('file-input').addEventListener('change', (e) => openItems(e.target.files));
  $('folder-input').addEventListener('change', (e) => openItems(e.target.files));
  const drop = $('viewport');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('dragging'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
  drop.addEventListener('drop', async (e) => {
    e.preventDefault();
    drop.classList.remove('dragging');
    const files = [];
    const walk = async (entry) => {
      if (entry.isFile) files.push(await new Promise((ok, no) => entry.file(ok, no)));
      else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((ok, no) => reader.readEntries(ok, no));
          if (!batch.length) break;
          for (const b of batch) await walk(b);
        }
      }
    };
    // Folders come as entries; files given by script (or old browsers) only as files.
    const entries = Array.from(e.dataTransfer.items || [])
      .map((it) => (it.webkitGetAsEntry ? it.webkitGetAsEntry() : null))
      .filter(Boolean);
    if (entries.length) {
      for (const entry of entries) await walk(entry);
    } else {
      files.push(...e.dataTransfer.files);
    }
    await openItems(files);
  });
}

function installControls() {
  $('tool-seg').addEventListener('click', () => setTool('segment'));
  $('tool-wl').addEventListener('click', () => setTool('window'));
  $('add-segment').addEventListener('click', () => { addSegment($('segment-name').value.trim()); $('segment-name').value = ''; });
  $('opacity').addEventListener('input', (e) => { app.display.view.opacity = Number(e.target.value); app.display.render(); });
  $('undo').addEventListener('click', undo);
  $('redo').addEventListener('click', redo);
  $('propagate').addEventListener('click', propagate);
  $('propagate-cancel').addEventListener('click', cancelPropagation);
  $('embed-all').addEventListener('click', embedAll);
  $('embed-cancel').addEventListener('click', () => embedAbort && embedAbort.abort());
  $('similar-btn').addEventListener('click', showSimilar);
  $('force-cpu').addEventListener('change', () => loadModel().catch((e) => status(e.message, true)));
  $('precision').addEventListener('change', () => loadModel().catch((e) => status(e.message, true)));
}

// The deployment's settings (config.json next to index.html, written by
// scripts/configure_pacs.sh): {dicomweb: {url}}, the PACS the panel starts with. Absent:
// none configured.
async function loadConfig() {
  try {
    const r = await fetch('config.json', { cache: 'no-cache' });
    return r.ok ? await r.json() : {};
  } catch {
    return {};
  }
}

async function main() {
  if (params.get('backend') === 'cpu') $('force-cpu').checked = true;
  app.display = await Display.create($('view'), { prefer2d: params.get('display') === '2d' });
  $('display-kind').textContent = `display: ${app.display.kind}`;
  if (app.display.gpuError) $('display-kind').title = `WebGPU display unavailable: ${app.display.gpuError}`;
  installMouse();
  installKeys();
  installFiles();
  installControls();
  installExport();
  installPacs({ renderSeriesList, showFrame });
  setTool('segment');
  app.config = await loadConfig();
  pacsLoad();
  // int8 ships beside the API module; this app also serves the fp32 weights.
  app.medfm = new MedFM({ weights: { fp32: new URL('../weights/lite_medsam_fp32.bpk', import.meta.url) } });
  window.medfm = app.medfm;
  app.medfm.addEventListener('progress', onProgress);
  app.medfm.addEventListener('crashed', (e) => status(`The engine stopped: ${e.detail.error}; restarting on the CPU`, true));
  app.medfm.addEventListener('recovered', (e) => {
    $('backend').textContent = `CPU (wasm) · ${e.detail.precision}`;
    $('backend').title = e.detail.fallback;
    status(`Recovered: ${e.detail.fallback}`);
  });
  // Offline after the first visit (app shell cached by the service worker).
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('sw.js').catch((e) => console.warn(`no offline support: ${e.message}`));
  }
  // The bundled samples are listed at once; the model loads meanwhile.
  const samples = await (await fetch('samples/index.json')).json();
  const model = loadModel();
  await openItems(samples.map((s) => s.file));
  await model;
  app.ready = true;
  document.body.dataset.ready = '1';
}

main().catch((e) => {
  status(`Start failed: ${e.message}`, true);
  document.body.dataset.ready = 'error';
});
