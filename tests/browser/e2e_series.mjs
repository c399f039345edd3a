// The web app against the CLI on whole series (part of e2e.mjs's CPU path): the display
// rule on every file of tests/data, slice order, and propagation through a series.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ARTIFACTS, ROOT, check, readPng } from './harness.mjs';
import { drawBox, idle } from './app_page.mjs';

// Every DICOM file of tests/data (`.dcm`, and the extensionless slices of series/).
function dataFiles(dir = path.join(ROOT, 'tests/data')) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return dataFiles(p);
    return e.name.endsWith('.dcm') || p.includes(`${path.sep}series${path.sep}`) ? [p] : [];
  }).sort();
}

// One display rule for the CLI and the browser (issue 20): for every DICOM file of
// tests/data, the viewer's rendering (MedFM.render, default view: the frame's first VOI
// or its range, MONOCHROME1 inverted, colour clamped) has the pixels of `medfm convert
// FILE --out x.png` (frame 0); a file the CLI refuses is refused by the viewer too (and
// JPEG-LS, which only the native build decodes, is refused by the viewer with the reason).
export async function displayParity(page) {
  const rows = [];
  let same = 0;
  for (const file of dataFiles()) {
    const name = path.relative(ROOT, file);
    const png = path.join(ARTIFACTS, 'parity.png');
    fs.rmSync(png, { force: true });
    let cli = null;
    let cliError = null;
    try {
      execFileSync(process.env.MEDFM_BIN, ['convert', file, '--out', png], { stdio: 'pipe' });
      cli = readPng(fs.readFileSync(png));
    } catch (e) {
      cliError = String(e.stderr || e.message).trim().split('\n').pop();
    }
    const web = await page.evaluate(async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const list = await window.medfm.open([new File([bytes], 'x.dcm')]);
      if (list.errors.length) return { error: list.errors[0].error };
      try {
        const r = await window.imageFrame(window.lastOpened(), 0, 'render', { view: {} });
        return { rows: r.rows, cols: r.cols, rgba: Array.from(r.rgba) };
      } catch (e) {
        return { error: e.message, code: e.code };
      }
    }, fs.readFileSync(file).toString('base64'));
    if (cliError || web.error) {
      // JPEG-LS: the browser build has no decoder (CharLS is C++) and says so.
      const webOnly = !cliError && /JPEG-LS is not supported in this build/.test(web.error);
      if (!(cliError && web.error) && !webOnly) rows.push({ name, cliError, webError: web.error });
      continue;
    }
    if (cli.width !== web.cols || cli.height !== web.rows) {
      rows.push({ name, cli: [cli.width, cli.height], web: [web.cols, web.rows] });
      continue;
    }
    let worst = 0;
    let differ = 0;
    for (let i = 0; i < cli.width * cli.height; i++) {
      for (let c = 0; c < 3; c++) {
        const d = Math.abs(web.rgba[i * 4 + c] - cli.data[i * cli.channels + (cli.channels === 1 ? 0 : c)]);
        worst = Math.max(worst, d);
        if (d) differ += 1;
      }
    }
    // Same Rust code on both sides; only a libm difference in exp (SIGMOID) could move a
    // value lying on a rounding boundary by one level.
    if (worst > 1 || differ > 1e-4 * cli.width * cli.height * 3) rows.push({ name, worst, differ });
    else same += 1;
  }
  check(rows.length === 0 && same >= 40, `the viewer renders every file of tests/data as \`medfm convert --out x.png\` does (${same} files the same, the rest refused by both)`, JSON.stringify(rows));
}

// The viewer's slice order is the CLI's: the CT series opened in reverse file order lists
// its frames in the order of the slices of `medfm convert DIR --out x.nii`.
export async function seriesOrderParity(page) {
  const dir = path.join(ROOT, 'tests/data/series/ct5n');
  const nii = path.join(ARTIFACTS, 'ct5n.nii');
  execFileSync(process.env.MEDFM_BIN, ['convert', dir, '--out', nii], { stdio: 'pipe' });
  const buf = fs.readFileSync(nii);
  const [nx, ny, nz] = [buf.readInt16LE(42), buf.readInt16LE(44), buf.readInt16LE(46)];
  const off = buf.readFloatLE(108);
  const slices = Array.from({ length: nz }, (_, k) => Array.from({ length: nx * ny }, (_, i) => buf.readFloatLE(off + 4 * (k * nx * ny + i))));
  const files = fs.readdirSync(dir).sort().reverse().map((f) => fs.readFileSync(path.join(dir, f)).toString('base64'));
  const web = await page.evaluate(async (list) => {
    await window.medfm.open(list.map((b64, i) => new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], `s${i}.dcm`)));
    const s = window.seriesOf(window.lastOpened());
    const out = [];
    for (let f = 0; f < window.medfm.series[s].frames; f++) out.push(Array.from((await window.medfm.pixels({ series: s, frame: f })).values));
    return { out, warnings: window.medfm.series[s].warnings };
  }, files);
  const same = web.out.length === nz && web.out.every((v, k) => v.length === slices[k].length && v.every((x, i) => Math.abs(x - slices[k][i]) < 1e-3));
  check(same && web.warnings.length === 0, 'the viewer orders a series as the CLI (slices along the normal, from the engine)', JSON.stringify({ frames: web.out.length, nz, warnings: web.warnings }));
}

// A box carried through a series (issue 21) on the brain MR of tests/data/series/brain11,
// opened by displayParity: through the JS API the same slices and areas (within 2 %, as
// for one slice) and volume as `medfm segment --propagate`; a changed box re-runs only the
// decoder; a cancel stops within one slice; two segments exported in one SEG read back by
// highdicom; in the viewer, the Propagate key fills the other slices and the segment list
// shows the volume.
export async function propagationChecks(page) {
  const precision = await page.evaluate(() => window.medfm.info.precision);
  const start = path.join(ROOT, 'tests/data/series/brain11/brain_010.dcm');
  const BRAIN = [45, 60, 215, 240];
  const cli = JSON.parse(execFileSync(process.env.MEDFM_BIN, ['segment', start, '--box', BRAIN.join(','), '--propagate', '--extent', '2', '--cpu',
    '--precision', precision, '--json', '--out', path.join(ARTIFACTS, 'propagated_cli.dcm')], { encoding: 'utf8' }));
  const startUid = cli.slices.find((x) => x.index === cli.start).sop_instance_uid;
  const web = await page.evaluate(async ({ uid, box }) => {
    const m = window.medfm;
    const s = m.series.findIndex((x) => x.refs.some((_, f) => m.meta({ series: x.index, frame: f }).sop_instance_uid === uid));
    const frame = m.series[s].refs.findIndex((_, f) => m.meta({ series: s, frame: f }).sop_instance_uid === uid);
    const seen = [];
    const a = await m.propagate({ series: s, frame, box, extent: 2, onProgress: (p) => seen.push(p.frame) });
    // A box 2 px larger: every slice is encoded already (decoder only).
    const encodes = [];
    const b = await m.propagate({ series: s, frame, box: [box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2], extent: 2, onProgress: (p) => encodes.push(p.encodeMs) });
    // Cancel as the start slice's mask arrives: at most one slice more.
    const ctl = new AbortController();
    const c = await m.propagate({ series: s, frame, box, signal: ctl.signal, onProgress: () => ctl.abort() });
    // A second segment (the right eye, from two slices down) and one SEG with both.
    const eye = await m.propagate({ series: s, frame: frame - 2, box: [80, 25, 115, 55], minIou: 0.8 });
    const both = [
      { label: 'Brain', color: [230, 60, 60], masks: a.slices },
      { label: 'Right eye', color: [240, 200, 40], masks: eye.slices },
    ];
    const seg = await m.exportSeg({ series: s, segments: both });
    // The same segments as a NIfTI label map: the image volume's header, label = number.
    const labels = await m.exportNifti({ series: s, segments: both });
    const image = await m.exportNifti({ series: s });
    const plane = m.series[s].rows * m.series[s].cols;
    const want = new Float32Array(plane * m.series[s].frames);
    both.forEach((x, k) => x.masks.forEach((q) => q.mask.forEach((b, i) => { if (b) want[q.frame * plane + i] = k + 1; })));
    const got = new DataView(labels.buffer, labels.byteOffset + 352);
    let differ = labels.length === 352 + 4 * want.length ? 0 : -1;
    for (let i = 0; differ >= 0 && i < want.length; i++) if (got.getFloat32(4 * i, true) !== want[i]) differ += 1;
    const nifti = { sameHeader: labels.subarray(0, 348).every((b, i) => b === image[i]), differ, labelled: want.filter((v) => v).length };
    const uids = m.series[s].refs.map((_, f) => m.meta({ series: s, frame: f }).sop_instance_uid);
    const bad = await m.propagate({ series: s, frame, box: [45, 60, 300, 240] }).then(() => 'resolved', (e) => `${e.code}: ${e.message}`);
    // The series-recipe model inputs (the propagation benchmark's peer runs on them): one
    // per slice, 0..1 with a maximum of 1 inside the resized image, zero padding outside.
    const inputs = await m.seriesModelInputs({ series: s });
    const inputsOk = inputs.length === m.series[s].frames && inputs.every((x) => {
      if (x.pixels.length !== 3 * 256 * 256 || Math.abs(x.scale * Math.max(x.rows, x.cols) - 256) > 1e-3) return false;
      let max = 0;
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < 256; y++) {
          for (let xx = 0; xx < 256; xx++) {
            const v = x.pixels[c * 65536 + y * 256 + xx];
            if (v < 0 || v > 1 || ((y >= x.newRows || xx >= x.newCols) && v !== 0)) return false;
            max = Math.max(max, v);
          }
        }
      }
      return Math.abs(max - 1) < 1e-6;
    });
    const list = (r) => r.slices.map((x) => ({ frame: x.frame, area: x.area, iou: x.iou }));
    return {
      s, frame, seen, a: { ...a, slices: list(a) }, encodes, b: list(b), c: { stopped: c.stopped, slices: list(c) }, eye: list(eye),
      masks: [...a.slices, ...eye.slices].map((x) => Array.from(x.mask)), seg: Array.from(seg), uids, rows: m.series[s].rows, cols: m.series[s].cols, bad, nifti, inputsOk,
    };
  }, { uid: startUid, box: BRAIN });
  const same = web.a.slices.length === cli.slices.length && web.a.slices.every((x, k) => x.frame === cli.slices[k].index && Math.abs(x.area - cli.slices[k].area) <= 0.02 * cli.slices[k].area);
  console.log(`  propagate: ${web.a.slices.map((x) => `${x.frame}:${x.area}`).join(' ')} (medfm segment --propagate: ${cli.slices.map((x) => `${x.index}:${x.area}`).join(' ')}), ${web.a.volumeMl && web.a.volumeMl.toFixed(2)} mL, ${web.a.ms.toFixed(0)} ms`);
  check(web.frame === cli.start && same, 'medfm.propagate(): the slices and areas (within 2 %) of medfm segment --propagate', JSON.stringify({ web: web.a.slices, cli: cli.slices }));
  check(web.inputsOk, 'seriesModelInputs(): one model input per slice, 0..1 inside the resized image, zero padding');
  check(Math.abs(web.a.volumeMl - cli.volume_ml) <= 0.02 * cli.volume_ml && JSON.stringify(web.a.stopped) === '["extent","extent"]', 'propagate: volume in mL as the CLI, stopped by the extent', JSON.stringify([web.a.volumeMl, cli.volume_ml, web.a.stopped]));
  check(web.seen.length === web.a.slices.length, 'propagate: onProgress sees every mask as it comes', JSON.stringify(web.seen));
  check(web.encodes.length === web.b.length && web.encodes.every((ms) => ms === 0), 'propagate again with another box: the decoder only (every slice encoded once)', JSON.stringify(web.encodes));
  check(JSON.stringify(web.c.stopped) === '["cancelled","cancelled"]' && web.c.slices.length <= 2, 'a cancel stops the propagation within one slice', JSON.stringify(web.c));
  check(/^bad-input: .*outside/.test(web.bad), 'a box outside the start slice is refused (bad-input)', web.bad);
  check(web.nifti.sameHeader && web.nifti.differ === 0 && web.nifti.labelled > 0, 'exportNifti with segments: a label map on the series\' grid (its header), label = segment number, the later one on overlap', JSON.stringify(web.nifti));
  const segPath = path.join(ARTIFACTS, 'two_segments_seg.dcm');
  fs.writeFileSync(segPath, Uint8Array.from(web.seg));
  const maskPath = path.join(ARTIFACTS, 'two_segments.u8');
  fs.writeFileSync(maskPath, Uint8Array.from(web.masks.flat()));
  const sources = [...web.a.slices.map((x) => [web.uids[x.frame], null, 1]), ...web.eye.map((x) => [web.uids[x.frame], null, 2])];
  const srcPath = path.join(ARTIFACTS, 'two_segments_sources.json');
  fs.writeFileSync(srcPath, JSON.stringify(sources));
  const segsPath = path.join(ARTIFACTS, 'two_segments_segments.json');
  fs.writeFileSync(segsPath, JSON.stringify([{ label: 'Brain', color: [230, 60, 60] }, { label: 'Right eye', color: [240, 200, 40] }]));
  try {
    const out = execFileSync(process.env.CHECK_PYTHON || 'python3', [path.join(ROOT, 'scripts/check_seg.py'), segPath, maskPath, String(web.rows), String(web.cols), srcPath, segsPath], { encoding: 'utf8' });
    check(true, `exportSeg with two propagated segments: highdicom reads every frame, label and colour: ${out.trim().split('\n').pop()}`);
  } catch (e) {
    check(false, 'exportSeg with two propagated segments is read back by highdicom', String(e.stdout || '') + String(e.stderr || e.message));
  }

  // The viewer: a box on the slice, p, the other slices get masks; the list shows mL.
  await page.evaluate(async (s) => { await window.app.openItems([]); await window.app.showFrame(s, 0); }, web.s);
  await page.evaluate((f) => window.app.showFrame(window.app.cur.series, f), web.frame);
  await page.waitForFunction((f) => window.app.cur.frame === f && window.app.rendered && window.app.rendered.rows === 256, web.frame);
  await page.fill('#segment-name', 'Brain');
  await page.click('#add-segment');
  await page.keyboard.press('s');
  await drawBox(page, BRAIN);
  await idle(page);
  await page.keyboard.press('p');
  await page.waitForFunction(() => window.app.lastPropagation && !window.app.propagating, null, { timeout: 600000, polling: 500 });
  await idle(page);
  const ui = await page.evaluate(() => {
    const seg = window.app.segments[window.app.active];
    const s = window.app.cur.series;
    return {
      frames: [...seg.results.keys()].filter((k) => Number(k.split(':')[0]) === s).length,
      list: document.getElementById('segments').textContent,
      prop: window.app.lastPropagation,
    };
  });
  check(ui.frames === ui.prop.slices.length && ui.frames > 1 && /Brain · .* mL/.test(ui.list), 'Propagate (p) in the viewer: masks on the slices reached, the volume in the segment list', JSON.stringify({ frames: ui.frames, list: ui.list, stopped: ui.prop.stopped }));
  await page.evaluate((f) => window.app.showFrame(window.app.cur.series, f), web.frame + 1);
  await page.waitForFunction((f) => window.app.cur.frame === f, web.frame + 1);
  await page.screenshot({ path: path.join(ARTIFACTS, 'viewer_propagated.png') });
}
