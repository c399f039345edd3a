// The viewer's exports: a SEG or NIfTI label map of the series' segments, the frame as
// PNG, the series as NIfTI; each a download, nothing sent anywhere.
import { composite } from './display.js';
import { $, app, status } from './state.js';

export function download(bytes, name, type) {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// One SEG holding every segment that has masks in the current series, all their slices.
export function seriesSegments(series) {
  return app.segments
    .map((seg) => ({
      label: seg.name,
      color: seg.color,
      masks: [...seg.results].filter(([k]) => Number(k.split(':')[0]) === series)
        .map(([k, r]) => ({ frame: Number(k.split(':')[1]), mask: r.mask })),
    }))
    .filter((x) => x.masks.length);
}

// Every segment of the series in one file: a SEG, or a NIfTI label map (label = number).
async function exportSegments(kind) {
  const segments = seriesSegments(app.cur.series);
  if (!segments.length) return status('Nothing to export: draw a box first', true);
  try {
    const series = app.cur.series;
    const bytes = kind === 'seg'
      ? await app.medfm.exportSeg({ series, segments })
      : await app.medfm.exportNifti({ series, segments });
    const frames = segments.reduce((n, x) => n + x.masks.length, 0);
    if (kind === 'seg') {
      download(bytes, 'medfm_seg.dcm', 'application/dicom');
      status(`SEG written: ${segments.length} segment(s), ${frames} frame(s), ${bytes.length} bytes`);
    } else {
      download(bytes, 'medfm_labels.nii', 'application/octet-stream');
      status(`NIfTI label map written: ${segments.map((x, i) => `${i + 1} = ${x.label}`).join(', ')}`);
    }
  } catch (e) {
    status(`${kind === 'seg' ? 'SEG' : 'NIfTI'} export failed: ${e.message}`, true);
  }
}

async function exportPng() {
  const { rows, cols, rgba } = app.rendered;
  const img = new ImageData(cols, rows);
  composite(rgba, app.display.overlay, app.display.view.opacity, img.data);
  const c = new OffscreenCanvas(cols, rows);
  c.getContext('2d').putImageData(img, 0, 0);
  const blob = await c.convertToBlob({ type: 'image/png' });
  download(blob, 'medfm_frame.png', 'image/png');
}

async function exportNifti() {
  try {
    const bytes = await app.medfm.exportNifti({ series: app.cur.series });
    download(bytes, 'medfm_series.nii', 'application/octet-stream');
  } catch (e) {
    status(`NIfTI export failed: ${e.message}`, true);
  }
}

export function installExport() {
  $('export-seg').addEventListener('click', () => exportSegments('seg'));
  $('export-png').addEventListener('click', exportPng);
  $('export-nifti').addEventListener('click', exportNifti);
  $('export-nifti-labels').addEventListener('click', () => exportSegments('nifti'));
}
