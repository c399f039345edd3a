// Retrieval in the browser, for bench/dicomweb.py: the built app (dist/) served with
// `/dicom-web` proxied to a DICOMweb server (same origin, as deployed behind one reverse
// proxy), headless Debian Chromium on the CPU backend; per run a fresh page opens the
// series by `medfm.open({dicomweb})` (WADO-RS streamed, each instance opened as its part
// completes) and renders its first slice as soon as the first instance is there. Prints
// one JSON line: per run the time to the first slice rendered, to the whole series open,
// and what arrived.
//
//   node bench/browser/pacs.mjs --pacs http://127.0.0.1:8042 --study UID --series UID [--runs 5]
//
// Needs: `trunk build --release` (dist/), `npm ci --prefix bench/browser`.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { serve } from '../../tests/browser/serve.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const HERE = path.dirname(new URL(import.meta.url).pathname);
const DIST = path.resolve(HERE, '../../dist');
const pacs = opt('pacs');
const study = opt('study');
const series = opt('series');
const runs = Number(opt('runs', '5'));
if (!pacs || !study || !series) throw new Error('usage: pacs.mjs --pacs URL --study UID --series UID [--runs N]');
if (!fs.existsSync(path.join(DIST, 'medfm-wasm_bg.wasm'))) throw new Error('dist/ missing: run `trunk build --release` first');

const server = await serve(DIST, { proxy: { '/dicom-web': pacs } });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'],
});
const out = [];
try {
  for (let i = 0; i < runs; i++) {
    const page = await browser.newPage();
    await page.goto(`${server.url}?backend=cpu`);
    await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 600000, polling: 200 });
    out.push(await page.evaluate(async ([st, se]) => {
      const t0 = performance.now();
      let first = null;
      let rendering = null;
      const r = await window.medfm.open({
        dicomweb: { url: '/dicom-web', study: st, series: se },
        onProgress: (p) => {
          const s = p.series && p.series.find((x) => x.uid === se);
          if (s && !rendering) {
            rendering = window.medfm.render({ series: s.index, frame: 0 }).then(() => { first = performance.now() - t0; });
          }
        },
      });
      const total = performance.now() - t0;
      await rendering;
      return { firstSliceMs: first, totalMs: total, instances: r.retrieved.instances, bytes: r.retrieved.bytes };
    }, [study, series]));
    await page.close();
  }
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify({ userAgent: 'Chromium headless', runs: out }));
