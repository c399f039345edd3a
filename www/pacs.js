// The PACS panel (DICOMweb): search, retrieve into the engine, save a SEG back.
import { $, app, status, fmtMs } from './state.js';
import { seriesSegments } from './export.js';

// The server URL is remembered in this browser (localStorage), the credentials only when
// the user ticks "remember". Retrieved images live in the engine's memory only.

const PACS_KEY = 'medfm-pacs';
let pacsAbort = null;
let pacsStudy = null; // the study whose series the panel lists
// The viewer's series list and frame display (app.js), given to installPacs.
let view = null;

export function pacsLoad() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(PACS_KEY) || '{}');
  } catch {
    saved = {};
  }
  $('pacs-url').value = saved.url || (app.config.dicomweb && app.config.dicomweb.url) || '';
  $('pacs-user').value = saved.user || '';
  $('pacs-secret').value = saved.secret || '';
  $('pacs-remember').checked = !!saved.secret;
}

function pacsSave() {
  const keep = { url: $('pacs-url').value.trim() };
  if ($('pacs-remember').checked) Object.assign(keep, { user: $('pacs-user').value, secret: $('pacs-secret').value });
  localStorage.setItem(PACS_KEY, JSON.stringify(keep));
}

// The origins this page may connect to, from its Content-Security-Policy meta tag
// (connect-src), or null when it has none.
function connectSources() {
  const meta = document.querySelector('meta[http-equiv="Content-Security-Policy"]');
  if (!meta) return null;
  const d = meta.content.split(';').map((x) => x.trim().split(/\s+/)).find((x) => x[0] === 'connect-src');
  return d ? d.slice(1) : null;
}

// {url, headers} of the panel's server; refused with the reason when this app's policy
// does not allow its origin (the deployer configures it: docs/browser.md, "PACS").
function pacsServer() {
  const raw = $('pacs-url').value.trim();
  if (!raw) throw new Error('give the PACS server (its DICOMweb root, e.g. /dicom-web)');
  let url;
  try {
    url = new URL(raw, location.href);
  } catch {
    throw new Error(`${raw} is not a URL`);
  }
  const allowed = connectSources();
  if (allowed && url.origin !== location.origin && !allowed.includes(url.origin) && !allowed.includes('*')) {
    throw new Error(`this app may only connect to ${location.origin}${allowed.filter((x) => x !== "'self'").map((x) => `, ${x}`).join('')} (its Content-Security-Policy): ${url.origin} must be configured by whoever deploys it (docs/browser.md, "PACS")`);
  }
  const user = $('pacs-user').value;
  const secret = $('pacs-secret').value;
  const headers = {};
  if (user) headers.Authorization = `Basic ${btoa(unescape(encodeURIComponent(`${user}:${secret}`)))}`;
  else if (secret) headers.Authorization = `Bearer ${secret}`;
  pacsSave();
  return { url: url.href.replace(/\/+$/, ''), headers };
}

function pacsItem(list, text, onClick) {
  const li = document.createElement('li');
  li.textContent = text;
  li.addEventListener('click', onClick);
  $(list).append(li);
  return li;
}

async function pacsSearch() {
  try {
    const dicomweb = pacsServer();
    const query = { limit: 100 };
    for (const [id, key] of [['pacs-patient-id', 'patientId'], ['pacs-patient-name', 'patientName'], ['pacs-date', 'date'], ['pacs-modality', 'modality'], ['pacs-accession', 'accession']]) {
      const v = $(id).value.trim();
      if (v) query[key] = v;
    }
    status('Searching the PACS…');
    const studies = await app.medfm.searchStudies({ dicomweb, query });
    $('pacs-studies').replaceChildren();
    $('pacs-series').replaceChildren();
    pacsStudy = null;
    for (const st of studies) {
      const text = [st.date, st.patientName || st.patientId, st.modalities.join('/'), st.description, `${st.series ?? '?'} series`].filter(Boolean).join(' · ');
      pacsItem('pacs-studies', text, () => pacsSeries(st)).dataset.uid = st.uid;
    }
    status(`${studies.length} stud${studies.length === 1 ? 'y' : 'ies'} found`);
  } catch (e) {
    status(`PACS search failed: ${e.message}`, true);
  }
}

async function pacsSeries(study) {
  try {
    const dicomweb = pacsServer();
    const list = await app.medfm.searchSeries({ dicomweb, study: study.uid });
    pacsStudy = study;
    $('pacs-series').replaceChildren();
    for (const se of list) {
      const text = [se.modality, se.number !== null && se.number !== undefined ? `#${se.number}` : '', se.description, `${se.instances ?? '?'} images`].filter(Boolean).join(' · ');
      pacsItem('pacs-series', text, () => pacsOpen(study.uid, se)).dataset.uid = se.uid;
    }
    status(`${list.length} series in the study: click one to open it`);
  } catch (e) {
    status(`PACS series search failed: ${e.message}`, true);
  }
}

async function pacsOpen(study, series) {
  if (pacsAbort) return status('A retrieve is running: cancel it first', true);
  pacsAbort = new AbortController();
  $('pacs-cancel').disabled = false;
  $('pacs-progress').max = series.instances || 1;
  $('pacs-progress').value = 0;
  const t0 = performance.now();
  let shown = false;
  app.busy += 1;
  try {
    const dicomweb = pacsServer();
    const list = await app.medfm.open({
      dicomweb: { ...dicomweb, study, series: series.uid },
      signal: pacsAbort.signal,
      onProgress: (p) => {
        $('pacs-progress').value = p.instances;
        status(`Retrieving: ${p.instances}${series.instances ? ` / ${series.instances}` : ''} images, ${(p.bytes / 1e6).toFixed(1)} MB`);
        if (p.series) {
          app.series = app.medfm.list();
          view.renderSeriesList();
          const s = p.series.find((x) => x.uid === series.uid);
          // The first slice on screen as soon as it has arrived.
          if (s && !shown) {
            shown = true;
            app.firstSliceMs = performance.now() - t0;
            view.showFrame(s.index, 0);
          }
        }
      },
    });
    app.series = app.medfm.list();
    view.renderSeriesList();
    const s = list.find((x) => x.uid === series.uid);
    if (s) await view.showFrame(s.index, app.cur.series === s.index ? app.cur.frame : 0);
    const r = list.retrieved;
    app.lastRetrieve = { ...r, firstSliceMs: app.firstSliceMs };
    const skipped = list.errors.length ? `; skipped ${list.errors.map((e) => `${e.name}: ${e.error}`).join('; ')}` : '';
    status(`${r.instances} image(s) from the PACS in ${fmtMs(r.ms)}${r.stopped ? ' (cancelled: the images received stay open)' : ''}${skipped}`, list.errors.length > 0);
  } catch (e) {
    status(`PACS retrieve failed: ${e.message}`, true);
  } finally {
    app.busy -= 1;
    pacsAbort = null;
    $('pacs-cancel').disabled = true;
  }
}

// The SEG of every segment of the current series, to the panel's PACS, after the user
// confirms (the dialog names the server).
async function saveToPacs() {
  const segments = seriesSegments(app.cur.series);
  if (!segments.length) return status('Nothing to save: draw a box first', true);
  app.busy += 1;
  try {
    const dicomweb = pacsServer();
    const bytes = await app.medfm.exportSeg({ series: app.cur.series, segments });
    const frames = segments.reduce((n, x) => n + x.masks.length, 0);
    if (!window.confirm(`Send a DICOM SEG (${segments.length} segment(s), ${frames} frame(s)) of this series to ${dicomweb.url}?`)) {
      status('Not sent');
      return;
    }
    const r = await app.medfm.store({ dicomweb, bytes });
    // The panel lists the study's series again, the new SEG among them.
    const study = app.series[app.cur.series] && app.series[app.cur.series].study;
    if (pacsStudy && pacsStudy.uid === study) await pacsSeries(pacsStudy);
    app.lastStore = r;
    status(`Saved to ${dicomweb.url}: ${r.instances.map((i) => `${i.status}${i.reason ? ` (${i.reason})` : ''}`).join(', ')}`);
  } catch (e) {
    status(`Save to PACS failed: ${e.message}`, true);
  } finally {
    app.busy -= 1;
  }
}

export function installPacs(viewer) {
  view = viewer;
  $('pacs-search').addEventListener('click', pacsSearch);
  $('pacs-panel').addEventListener('keydown', (e) => { if (e.key === 'Enter' && e.target.id !== 'pacs-url') pacsSearch(); });
  $('pacs-cancel').addEventListener('click', () => pacsAbort && pacsAbort.abort());
  $('save-pacs').addEventListener('click', saveToPacs);
}
