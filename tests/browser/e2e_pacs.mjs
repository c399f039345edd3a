// e2e.mjs's PACS path (issue 22): the web app against a real Orthanc with its DICOMweb
// plugin, behind the app's server as a same-origin proxy and then as a CORS-enabled PACS
// on another origin.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { ARTIFACTS, ROOT, check } from './harness.mjs';
import { PACS_AUTH, PACS_PASSWORD, PACS_USER, freePort, orthancRequest, startOrthanc } from './orthanc.mjs';
import { forward, serve } from './serve.mjs';
import { cachedUrls, drawBox, idle, recordRequests, waitReady } from './app_page.mjs';

const BRAIN_DIR = path.join(ROOT, 'tests/data/series/brain11');

const BRAIN_BOX = [45, 60, 215, 240];

// A CORS-enabled front of the PACS on another origin (as nginx adds CORS in front of
// Orthanc, which has none): preflights answered, `allowOrigin` allowed.
function corsFront(target, allowOrigin) {
  const cors = {
    'access-control-allow-origin': allowOrigin,
    'access-control-allow-headers': 'authorization, content-type, accept',
    'access-control-allow-methods': 'GET, POST',
    vary: 'origin',
  };
  const srv = http.createServer((req, res) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...cors, 'access-control-max-age': '60' }).end();
      return;
    }
    forward(req, res, target, cors, 120); // a slow link, as for the proxy
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({
    url: `http://127.0.0.1:${srv.address().port}`, close: () => { srv.close(); srv.closeAllConnections(); },
  })));
}

// A DICOM attribute of a file, by dcmdump (dcmtk).
function dicomValue(file, tag) {
  const out = execFileSync('dcmdump', ['+P', tag, file], { encoding: 'utf8' });
  const m = out.match(/\[([^\]]*)\]/);
  if (!m) throw new Error(`${file} has no ${tag}`);
  return m[1];
}

// The panel's whole workflow against `pacsUrl` (the DICOMweb root as the user types it):
// search by PatientID, the study's series, open (first slice on screen before the last
// arrives), a box on a retrieved slice (the mask of `medfm segment` on the local file),
// Save to PACS after the confirmation naming the server; Orthanc then holds the SEG.
async function pacsWorkflow(page, label, pacsUrl, orthanc, log) {
  const start = path.join(BRAIN_DIR, 'brain_010.dcm');
  const study = dicomValue(start, '0020,000d');
  const seriesUid = dicomValue(start, '0020,000e');
  const startUid = dicomValue(start, '0008,0018');
  const dialogs = [];
  page.on('dialog', async (d) => {
    dialogs.push({ t: Date.now(), message: d.message() });
    await d.accept();
  });
  await page.click('#pacs-panel summary');
  await page.fill('#pacs-url', pacsUrl);
  await page.fill('#pacs-user', PACS_USER);
  await page.fill('#pacs-secret', PACS_PASSWORD);
  await page.fill('#pacs-patient-id', dicomValue(start, '0010,0020'));
  await page.click('#pacs-search');
  await page.waitForSelector('#pacs-studies li', { timeout: 60000 });
  const studies = await page.$$eval('#pacs-studies li', (l) => l.map((x) => x.dataset.uid));
  check(studies.length === 1 && studies[0] === study, `${label}: the panel finds the study by PatientID`, JSON.stringify(studies));
  await page.click('#pacs-studies li');
  await page.waitForSelector('#pacs-series li', { timeout: 60000 });
  const listed = await page.$$eval('#pacs-series li', (l) => l.map((x) => [x.dataset.uid, x.textContent]));
  // (The MR series; a SEG saved by an earlier pass is listed too.)
  const mr = listed.filter((x) => x[0] === seriesUid);
  const others = listed.filter((x) => x[0] !== seriesUid);
  check(mr.length === 1 && /11 images/.test(mr[0][1]) && others.every((x) => /SEG/.test(x[1])), `${label}: the study's series listed with its image count`, JSON.stringify(listed));
  await page.click(`#pacs-series li[data-uid="${seriesUid}"]`);
  await page.waitForFunction(() => window.app.lastRetrieve, null, { timeout: 120000, polling: 200 });
  await idle(page);
  const got = await page.evaluate((uid) => {
    const s = window.app.series.find((x) => x.uid === uid);
    return { r: window.app.lastRetrieve, frames: s && s.frames, index: s && s.index, status: document.getElementById('status').textContent };
  }, seriesUid);
  console.log(`  ${label}: ${got.r.instances} images, ${(got.r.bytes / 1e6).toFixed(2)} MB in ${got.r.ms.toFixed(0)} ms, first slice on screen at ${got.r.firstSliceMs && got.r.firstSliceMs.toFixed(0)} ms`);
  check(got.r.instances === 11 && got.frames === 11 && !got.r.stopped, `${label}: the series retrieved and opened (11 slices)`, JSON.stringify(got));
  check(got.r.firstSliceMs > 0 && got.r.firstSliceMs < got.r.ms, `${label}: the first slice was on screen before the last one arrived`, JSON.stringify(got.r));
  // A box on the retrieved brain_010: the mask of `medfm segment` on the local file.
  const frame = await page.evaluate(([s, uid]) => window.app.series[s] && window.medfm.series[s].refs.findIndex((_, f) => window.medfm.meta({ series: s, frame: f }).sop_instance_uid === uid), [got.index, startUid]);
  await page.evaluate(([s, f]) => window.app.showFrame(s, f), [got.index, frame]);
  await page.evaluate(() => { window.app.lastResult = null; });
  await page.keyboard.press('s');
  await drawBox(page, BRAIN_BOX);
  await page.waitForFunction(() => window.app.lastResult !== null, null, { timeout: 600000, polling: 500 });
  await idle(page);
  const res = await page.evaluate((key) => ({ ...window.app.lastResult, box: window.app.segments[window.app.active].prompts.get(key).box }), `${got.index}:${frame}`);
  const precision = await page.evaluate(() => window.medfm.info.precision);
  const cli = JSON.parse(execFileSync(process.env.MEDFM_BIN, ['segment', start, '--box', res.box.join(','), '--cpu', '--precision', precision, '--json', '--out', path.join(ARTIFACTS, 'pacs_ref.png')], { encoding: 'utf8' }));
  check(res.area === cli.area, `${label}: a box on the retrieved slice gives the mask of medfm segment on the local file`, `${res.area} vs ${cli.area}`);
  // Save to PACS: a confirmation naming the server first, then one STOW-RS request.
  const tSave = Date.now();
  await page.evaluate(() => { window.app.lastStore = null; });
  await page.click('#save-pacs');
  await page.waitForFunction(() => window.app.lastStore || /Save to PACS failed/.test(document.getElementById('status').textContent), null, { timeout: 120000, polling: 200 });
  const stored = await page.evaluate(() => [window.app.lastStore, document.getElementById('status').textContent]);
  check(dialogs.length === 1 && dialogs[0].message.includes(new URL(pacsUrl, page.url()).href.replace(/\/$/, '')), `${label}: Save to PACS asks first, naming the server`, JSON.stringify(dialogs));
  check(stored[0] && stored[0].instances.length === 1 && stored[0].instances[0].status === 'success', `${label}: the SEG was stored`, JSON.stringify(stored));
  if (stored[0]) {
    const uid = stored[0].instances[0].uid;
    const found = await orthancRequest(orthanc.base, 'GET', `/dicom-web/studies/${study}/series?Modality=SEG`);
    const lookup = await orthancRequest(orthanc.base, 'POST', '/tools/lookup', uid);
    check(found.status === 200 && JSON.parse(found.body).length >= 1 && JSON.parse(lookup.body).some((x) => x.Type === 'Instance'),
      `${label}: Orthanc holds the SEG (QIDO Modality=SEG finds it; its SOPInstanceUID is there)`, `${found.status} ${lookup.body}`);
  }
  // The panel lists the study's series again, the new SEG among them.
  const segListed = await page.$$eval('#pacs-series li', (l) => l.map((x) => x.textContent)).then((l) => l.filter((x) => /^SEG/.test(x)));
  check(segListed.length >= 1, `${label}: after saving, the panel lists the SEG in the study`, JSON.stringify(segListed));
  await page.screenshot({ path: path.join(ARTIFACTS, `pacs_${label.replace(/\W+/g, '_')}.png`) });
  // The only request with a body: the STOW-RS POST, after the confirmation.
  const stowUrl = `${new URL(pacsUrl, page.url()).href.replace(/\/$/, '')}/studies`;
  // (The page and the context both report a worker's request: one Request object.)
  const bodies = [...new Map(log.filter((r) => r.t >= tSave - 1 && (r.method !== 'GET' || (r.body && r.body.length))).map((r) => [r.request, r])).values()];
  check(bodies.length === 1 && bodies[0].url === stowUrl && bodies[0].method === 'POST' && dialogs.length === 1 && bodies[0].t >= dialogs[0].t,
    `${label}: the only request with a body is the STOW-RS POST to the PACS, after the confirmation`, JSON.stringify(bodies.map((r) => `${r.method} ${r.url}`)));
  const before = log.filter((r) => r.t < tSave - 1 && (r.method !== 'GET' || (r.body && r.body.length)) && !r.url.endsWith('.bpk'));
  check(before.length === 0, `${label}: nothing with a body before Save to PACS`, JSON.stringify(before.map((r) => `${r.method} ${r.url}`)));
  const cached = Object.values(await cachedUrls(page)).flat().filter((u) => /dicom-web|studies/.test(u));
  check(cached.length === 0, `${label}: no cache holds a retrieved image or answer`, JSON.stringify(cached));
  const kept = await page.evaluate(() => localStorage.getItem('medfm-pacs'));
  check(kept && !kept.includes(PACS_PASSWORD) && !/user|secret/.test(kept), `${label}: the browser remembers the server only (no credentials unless asked)`, kept);
  check(!log.csp, `${label}: no Content-Security-Policy violation`, JSON.stringify(log.csp));
  check(!log.panics && !log.pageErrors, `${label}: no panic or page error`, JSON.stringify([log.panics, log.pageErrors]));
  return { study, seriesUid };
}

export async function pacsPath(browser, dist) {
  console.log('PACS path (Orthanc + DICOMweb: same-origin proxy, then CORS)');
  const orthanc = await startOrthanc(fs.readdirSync(BRAIN_DIR).filter((x) => x.endsWith('.dcm')).sort().map((f) => path.join(BRAIN_DIR, f)));
  const servers = [];
  try {
    // 1. Behind the app's own server as a same-origin reverse proxy (the CSP as shipped:
    // connect-src 'self'); the answers come slowly (a throttled link) so the first slice
    // is shown before the series has arrived.
    const proxied = await serve(dist, { proxy: { '/dicom-web': { target: orthanc.base, throttleMs: 120 } } });
    servers.push(proxied);
    let context = await browser.newContext({ viewport: { width: 1400, height: 820 } });
    let page = await context.newPage();
    let log = [];
    recordRequests(page, log);
    await page.goto(`${proxied.url}?backend=cpu`);
    await waitReady(page, 600000);
    const { study, seriesUid } = await pacsWorkflow(page, 'same-origin proxy', '/dicom-web', orthanc, log);
    const foreign = log.filter((r) => !r.url.startsWith(proxied.url) && !/^(blob|data):/.test(r.url));
    check(foreign.length === 0, 'same-origin proxy: every request goes to the app\'s origin', JSON.stringify(foreign.map((r) => r.url)));
    // Errors the panel shows: wrong credentials, a PACS the policy does not allow.
    const panelError = async (fill) => {
      await page.evaluate(() => { document.getElementById('status').textContent = ''; });
      for (const [sel, v] of fill) await page.fill(sel, v);
      await page.click('#pacs-search');
      await page.waitForFunction(() => document.getElementById('status').classList.contains('error') && /failed/.test(document.getElementById('status').textContent), null, { timeout: 60000 })
        .catch(() => {});
      return page.textContent('#status');
    };
    const e401 = await panelError([['#pacs-secret', 'wrong']]);
    check(/HTTP 401/.test(e401) && /\/dicom-web\/studies/.test(e401) && !e401.includes('wrong'), 'wrong credentials: the status and path, not the password', e401);
    const eCsp = await panelError([['#pacs-secret', PACS_PASSWORD], ['#pacs-url', 'http://127.0.0.1:9/dicom-web']]);
    check(/Content-Security-Policy/.test(eCsp) && /configured/.test(eCsp), 'a PACS of an origin the policy does not allow: refused with what to do', eCsp);
    // JS API: cancel a retrieve after its first image (what arrived stays open).
    const cancelled = await page.evaluate(async ([auth, st, se]) => {
      const ctl = new AbortController();
      const seen = [];
      const r = await window.medfm.open({ dicomweb: { url: '/dicom-web', headers: { Authorization: auth }, study: st, series: se }, signal: ctl.signal, onProgress: (p) => { seen.push(p.instances); ctl.abort(); } });
      return { retrieved: r.retrieved, seen };
    }, [PACS_AUTH, study, seriesUid]);
    check(cancelled.retrieved.stopped === 'cancelled' && cancelled.retrieved.instances < 11, 'open({dicomweb}) with signal.abort(): the transfer stops', JSON.stringify(cancelled));
    // A study that is not there: the server's 404 with the path.
    const missing = await page.evaluate(async (auth) => window.medfm.open({ dicomweb: { url: '/dicom-web', headers: { Authorization: auth }, study: '1.2.3.4' } }).then(() => 'opened', (e) => `${e.code}: ${e.message}`), PACS_AUTH);
    check(/^bad-input: GET \/dicom-web\/studies\/1\.2\.3\.4: HTTP 404/.test(missing), 'a missing study: HTTP 404 with the path', missing);
    await context.close();

    // 2. A CORS-enabled PACS on another origin, the app configured for it by
    // scripts/configure_pacs.sh (config.json, connect-src 'self' + that origin).
    const dist2 = fs.mkdtempSync(path.join(os.tmpdir(), 'medfm-dist-pacs-'));
    fs.cpSync(dist, dist2, { recursive: true });
    const port = await freePort();
    const front = await corsFront(orthanc.base, `http://127.0.0.1:${port}`);
    servers.push(front);
    execFileSync('bash', [path.join(ROOT, 'scripts/configure_pacs.sh'), dist2, `${front.url}/dicom-web`], { encoding: 'utf8' });
    const app3 = await serve(dist2, { port });
    servers.push(app3);
    context = await browser.newContext({ viewport: { width: 1400, height: 820 } });
    page = await context.newPage();
    log = [];
    recordRequests(page, log);
    await page.goto(`${app3.url}?backend=cpu`);
    await waitReady(page, 600000);
    const prefilled = await page.inputValue('#pacs-url');
    check(prefilled === `${front.url}/dicom-web`, 'CORS: the panel starts with the configured PACS (config.json)', prefilled);
    await pacsWorkflow(page, 'CORS', `${front.url}/dicom-web`, orthanc, log);
    const elsewhere = log.filter((r) => !r.url.startsWith(app3.url) && !r.url.startsWith(`${front.url}/dicom-web/`) && !/^(blob|data):/.test(r.url));
    check(elsewhere.length === 0, 'CORS: requests go to the app and the configured PACS only', JSON.stringify(elsewhere.map((r) => r.url)));
    // The PACS down: a clear error.
    front.close();
    const down = await page.evaluate(async (url) => window.medfm.searchStudies({ dicomweb: { url } }).then(() => 'found', (e) => `${e.code}: ${e.message}`), `${front.url}/dicom-web`);
    check(/^io: GET \/dicom-web\/studies: the server could not be reached/.test(down), 'a PACS that is down: a clear error', down);
    await context.close();
    fs.rmSync(dist2, { recursive: true, force: true });
  } finally {
    for (const s of servers) s.close();
    orthanc.stop();
  }
}
