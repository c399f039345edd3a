// What the browser tests share: their command line (--artifacts, --tgz), checks that
// count their failures, the Chromium launch, the package's tarball, and the CLI's
// reference masks (through a PNG reader).
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';

const args = process.argv.slice(2);

/** The value after `--name` on the command line, else `dflt`. */
export function opt(name, dflt) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
}

/** Whether `--name` is on the command line. */
export function flag(name) {
  return args.includes(`--${name}`);
}

/** The repository's root. */
export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

/** Where a test keeps what it makes for a person to look at (--artifacts), created. */
export const ARTIFACTS = path.resolve(opt('artifacts', path.join(os.tmpdir(), 'medfm-browser-artifacts')));
fs.mkdirSync(ARTIFACTS, { recursive: true });

/** Run a command in `cwd` (its stderr shown), returning its stdout. */
export function run(cmd, argv, cwd, env = {}) {
  return execFileSync(cmd, argv, { cwd, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
}

/** The npm tarball to test: --tgz, else one packed into `dir` by scripts/npm_pack.sh (from the web build MEDFM_WEB_DIST names). An absolute path. */
export function tarball(dir) {
  const given = opt('tgz');
  if (given) return path.resolve(given);
  return path.resolve(run('bash', [path.join(ROOT, 'scripts/npm_pack.sh'), dir], ROOT).trim().split('\n').pop());
}

let failures = 0;
const started = Date.now();

/** Log a check as ok or FAIL (with `detail`) and the seconds since the test started (so a
 * CI log shows where the time goes); failures are counted for the exit code. */
export function check(cond, what, detail = '') {
  const at = `[${Math.round((Date.now() - started) / 1000)} s]`;
  if (cond) {
    console.log(`  ok   ${at} ${what}`);
  } else {
    failures += 1;
    console.log(`  FAIL ${at} ${what} ${detail}`);
  }
}

/** The number of failed checks so far. */
export function failed() {
  return failures;
}

/** Run a test's `main`: a throw is a failed check (`what` ran to its end); then the
 * process exits 1 when any check failed, else prints `passed`. */
export async function runTest(what, passed, main) {
  try {
    await main();
  } catch (e) {
    check(false, `${what} ran to its end`, e.stack || String(e));
  }
  if (failures) {
    console.log(`${failures} check(s) failed`);
    process.exit(1);
  }
  console.log(passed);
}

/** Headless Debian Chromium (no browser download), WebGPU allowed (SwiftShader here). */
export async function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--enable-unsafe-webgpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic', ...extraArgs],
  });
}

// A PNG as `medfm convert` and `medfm segment --out` write it (8-bit grey or RGB, not
// interlaced), decoded with no dependency: {width, height, channels, data}.
export function readPng(buf) {
  let at = 8;
  let width = 0, height = 0, channels = 0;
  const idat = [];
  while (at < buf.length) {
    const len = buf.readUInt32BE(at);
    const type = buf.toString('latin1', at + 4, at + 8);
    const body = buf.subarray(at + 8, at + 8 + len);
    if (type === 'IHDR') {
      width = body.readUInt32BE(0);
      height = body.readUInt32BE(4);
      if (body[8] !== 8 || body[12] !== 0) throw new Error('readPng: only 8-bit, non-interlaced');
      channels = { 0: 1, 2: 3, 4: 2, 6: 4 }[body[9]];
    } else if (type === 'IDAT') {
      idat.push(body);
    }
    at += 12 + len;
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const data = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? data[y * stride + x - channels] : 0;
      const b = y > 0 ? data[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? data[(y - 1) * stride + x - channels] : 0;
      const p = a + b - c;
      const pred = [0, a, b, Math.floor((a + b) / 2), Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c][f];
      data[y * stride + x] = (line[x] + pred) & 255;
    }
  }
  return { width, height, channels, data };
}

/** The mask of `medfm segment FILE --box ... [--point x,y,label ...] --cpu --precision int8` (MEDFM_BIN), through its PNG at `png`: {area, mask (0/1), rows, cols}. */
export function referenceMask(file, box, png, points = []) {
  const bin = process.env.MEDFM_BIN;
  if (!bin) throw new Error('MEDFM_BIN is not set (path of the native medfm binary)');
  const prompt = [...(box ? ['--box', box.join(',')] : []), ...points.flatMap((p) => ['--point', p.join(',')])];
  const out = JSON.parse(execFileSync(bin, ['segment', file, ...prompt, '--cpu', '--precision', 'int8', '--json', '--out', png], { encoding: 'utf8' }));
  const img = readPng(fs.readFileSync(png));
  return { area: out.area, mask: Uint8Array.from(img.data, (v) => (v > 0 ? 1 : 0)), rows: img.height, cols: img.width };
}

/** Intersection over union of two 0/1 masks of one size (1 when both are empty). */
export function iou(a, b) {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    inter += a[i] & b[i];
    union += a[i] | b[i];
  }
  return union ? inter / union : 1;
}
