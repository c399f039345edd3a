// The viewer's state and status line, shared by its modules (app.js, export.js, pacs.js).

export const $ = (id) => document.getElementById(id);
export const PRESETS = { 1: [40, 400, 'soft tissue'], 2: [-600, 1500, 'lung'], 3: [90, 150, 'liver'], 4: [480, 2500, 'bone'], 5: [40, 80, 'brain'] };
export const COLORS = [[230, 60, 60], [60, 200, 90], [70, 130, 240], [240, 200, 40], [200, 80, 220], [40, 210, 210]];
export const params = new URLSearchParams(location.search);

export const app = {
  medfm: null,
  display: null,
  series: [],
  cur: { series: -1, frame: 0 },
  tool: 'segment',
  config: {}, // the deployment's config.json
  // {name, color, prompts: Map(key -> {box, points}), results: Map(key -> result),
  // volumes: Map(series -> mL or null)}
  segments: [],
  propagating: null, // {abort: AbortController, segment, series} while a propagation runs
  active: -1,
  undo: [],
  redo: [],
  busy: 0,
  lastResult: null,
  errors: [],
  timings: {},
  spans: {}, // the pipeline's last step times: {read, decode, preprocess, encode, decode_mask, write}
  log: [],
  // What the display shows: the file's own VOI (window null) or the user's window, and
  // the inversion (undefined: MONOCHROME1 rule). Rendered by the engine (MedFM.render).
  wl: { window: null, invert: undefined },
  rendered: null, // the last MedFM.render result shown
  rendering: null, // promise of the render in flight
  renderAgain: false,
};
window.app = app;

export function status(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
  if (isError) app.errors.push(text);
}

export function fmtMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}
