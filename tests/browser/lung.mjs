// The 48-slice lung CT of tests/data/ct-lung1 as the viewer tests use it (OHIF, the example
// viewer): its files, the tumour slice and box, `medfm segment` and `--propagate` on them as
// references keyed by SOP Instance UID (a viewer's stack order need not be medfm's), and the
// checks of an exported SEG.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ARTIFACTS, ROOT, check } from './harness.mjs';

export const CT_DIR = path.join(ROOT, 'tests/data/ct-lung1/series');
export const CT_FILES = fs.readdirSync(CT_DIR).filter((f) => f.endsWith('.dcm')).sort().map((f) => path.join(CT_DIR, f));
export const TUMOUR_FILE = path.join(CT_DIR, 'IM0009.dcm');
/** The expert label's bounding box on that slice (x 206..229, y 347..368) with a margin. */
export const TUMOUR_BOX = [200, 341, 236, 375];

/** A DICOM attribute of a file, by dcmdump (dcmtk). */
export function dicomValue(file, tag) {
  const m = execFileSync('dcmdump', ['+P', tag, file], { encoding: 'utf8' }).match(/\[([^\]]*)\]/);
  if (!m) throw new Error(`${file} has no ${tag}`);
  return m[1];
}

// Page-side helpers (run in the browser, given the page's Cornerstone3D pieces; a test puts
// them into the page with `pageHelpers`).

/** Every image of `viewport`'s stack in segmentation `segmentationId`'s labelmap, sparse
 * ({n, set}: the length and the set voxels' indices; 48 dense 512x512 slices are 12 M values
 * through the browser protocol, a minute here), each labelmap image found by the image it
 * was derived from; null where an image has none, and null without the segmentation. */
const readLabelmap = ({ cache, segmentation, viewport, segmentationId }) => {
  const data = segmentationId && segmentation.state.getSegmentation(segmentationId)?.representationData?.Labelmap;
  if (!data) return null;
  const ids = data.imageIds || Object.values(data.labelmaps || {}).flatMap((layer) => layer.imageIds || []);
  const bySource = new Map(ids.map((lid) => [cache.getImage(lid)?.referencedImageId, lid]));
  return viewport.getImageIds().map((imageId) => {
    const img = cache.getImage(bySource.get(imageId));
    if (!img) return null;
    const n = img.rows * img.columns;
    const set = [];
    for (let i = 0; i < n; i++) if (img.voxelManager.getAtIndex(i)) set.push(i);
    return { n, set };
  });
};

/** Page coordinates of image pixel [x, y] of the image `viewport` shows. */
const pagePoint = ({ viewport, utilities }, [x, y]) => {
  const [cx, cy] = viewport.worldToCanvas(utilities.imageToWorldCoords(viewport.getCurrentImageId(), [x, y]));
  const r = viewport.canvas.getBoundingClientRect();
  return [r.left + cx, r.top + cy];
};

/** A script that defines `window.medfmPage = {readLabelmap, pagePoint}` (for addInitScript). */
export const pageHelpers = `window.medfmPage = { readLabelmap: ${readLabelmap}, pagePoint: ${pagePoint} };`;

/** A labelmap slice read sparse ({n, set}: its length and the set indices) as 0/1 bytes; null stays null. */
export function dense(slice) {
  if (!slice) return null;
  const out = new Uint8Array(slice.n);
  for (const i of slice.set) out[i] = 1;
  return out;
}

/** Dice of two 0/1 arrays of one length (1 when both are empty). */
export function dice(a, b) {
  let inter = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    inter += a[i] & b[i];
    sum += a[i] + b[i];
  }
  return sum ? (2 * inter) / sum : 1;
}

/** `medfm segment --propagate` from the tumour slice with `box` (MEDFM_BIN, CPU, int8): each
 * kept slice's mask (0/1, rows*cols) by SOP Instance UID, from its label NIfTI. */
export function referencePropagation(box, label) {
  const nii = path.join(ARTIFACTS, `${label}_ref_propagation.nii`);
  const out = JSON.parse(execFileSync(process.env.MEDFM_BIN, ['segment', TUMOUR_FILE, '--propagate', '--box', box.join(','),
    '--cpu', '--precision', 'int8', '--json', '--out', nii], { encoding: 'utf8' }));
  const bytes = fs.readFileSync(nii);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getInt16(70, true) !== 16) throw new Error('the reference label volume is not float32');
  const offset = view.getFloat32(108, true);
  const plane = view.getInt16(42, true) * view.getInt16(44, true);
  const masks = new Map();
  for (const { index, sop_instance_uid: uid } of out.slices) {
    const mask = new Uint8Array(plane);
    for (let i = 0; i < plane; i++) mask[i] = view.getFloat32(offset + 4 * (index * plane + i), true) > 0 ? 1 : 0;
    masks.set(uid, mask);
  }
  return masks;
}

/** Dice between a viewer's labelmap (`slices`: per stack image, 0/1 or null; `uids` their
 * SOP Instance UIDs) and a reference by UID. */
export function stackDice(slices, uids, reference) {
  let inter = 0;
  let sum = 0;
  slices.forEach((s, i) => {
    const want = reference.get(uids[i]);
    const n = Math.max(s?.length || 0, want?.length || 0);
    for (let k = 0; k < n; k++) {
      const a = s?.[k] ? 1 : 0;
      const b = want?.[k] ? 1 : 0;
      inter += a & b;
      sum += a + b;
    }
  });
  return sum ? (2 * inter) / sum : 1;
}

/** The checks of a SEG exported from a viewer's labelmap: dciodvfy with no error, the CT's
 * study and patient, and highdicom reading back exactly the labelmap's non-empty slices. */
export function checkSeg(segPath, slices, uids, label) {
  const v = spawnSync('dciodvfy', [segPath], { encoding: 'utf8' });
  const errors = `${v.stdout}${v.stderr}`.split('\n').filter((l) => l.startsWith('Error'));
  check(v.status !== null && errors.length === 0, `${label}: the exported SEG passes dciodvfy with no error`, errors.slice(0, 5).join(' | ') || String(v.error || ''));
  const study = dicomValue(TUMOUR_FILE, '0020,000d');
  const patient = dicomValue(TUMOUR_FILE, '0010,0020');
  check(dicomValue(segPath, '0020,000d') === study && dicomValue(segPath, '0010,0020') === patient,
    `${label}: the SEG is in the CT's study, under its patient's ID (${patient})`);
  const kept = slices.map((s, i) => [s, i]).filter(([s]) => s && s.some((x) => x));
  const maskPath = path.join(ARTIFACTS, `${label}_seg_mask.u8`);
  fs.writeFileSync(maskPath, Uint8Array.from(kept.flatMap(([s]) => Array.from(s))));
  const srcPath = path.join(ARTIFACTS, `${label}_seg_sources.json`);
  fs.writeFileSync(srcPath, JSON.stringify(kept.map(([, i]) => [uids[i], null, 1])));
  try {
    const out = execFileSync(process.env.CHECK_PYTHON || 'python3', [path.join(ROOT, 'scripts/check_seg.py'), segPath, maskPath, '512', '512', srcPath], { encoding: 'utf8' });
    check(true, `${label}: highdicom reads the SEG back as the labelmap (${kept.length} slices): ${out.trim().split('\n').pop()}`);
  } catch (e) {
    check(false, `${label}: highdicom reads the SEG back as the labelmap`, String(e.stdout || '') + String(e.stderr || e.message));
  }
}
