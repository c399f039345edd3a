// A real PACS for the browser tests: Orthanc with its DICOMweb plugin (Debian's orthanc and
// orthanc-dicomweb) on 127.0.0.1, its own temporary storage, basic auth.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const ORTHANC = '/usr/sbin/Orthanc';
const DICOMWEB_PLUGIN = '/usr/share/orthanc/plugins/libOrthancDicomWeb.so';
export const PACS_USER = 'medfm';
export const PACS_PASSWORD = 's3cret';
export const PACS_AUTH = `Basic ${Buffer.from(`${PACS_USER}:${PACS_PASSWORD}`).toString('base64')}`;

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** One request to Orthanc (basic auth): {status, body}. */
export function orthancRequest(base, method, p, body) {
  return new Promise((resolve, reject) => {
    const u = new URL(p, base);
    const req = http.request({ host: u.hostname, port: u.port, method, path: u.pathname + u.search, headers: { authorization: PACS_AUTH } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Orthanc on 127.0.0.1 with a temporary configuration (its own storage, DICOMweb on, basic
 * auth: PACS_USER, PACS_PASSWORD), loaded with `files` (paths) through its REST API:
 * {base, stop}. */
export async function startOrthanc(files) {
  if (!fs.existsSync(ORTHANC) || !fs.existsSync(DICOMWEB_PLUGIN)) throw new Error('Orthanc and its DICOMweb plugin are needed: apt-get install orthanc orthanc-dicomweb');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'medfm-orthanc-'));
  const port = await freePort();
  const config = {
    Name: 'medfm-browser-test', StorageDirectory: path.join(dir, 'storage'), IndexDirectory: path.join(dir, 'index'),
    HttpPort: port, DicomPort: await freePort(), RemoteAccessAllowed: false, AuthenticationEnabled: true,
    RegisteredUsers: { [PACS_USER]: PACS_PASSWORD }, Plugins: [DICOMWEB_PLUGIN], DicomWeb: { Enable: true, Root: '/dicom-web/' },
  };
  fs.writeFileSync(path.join(dir, 'orthanc.json'), JSON.stringify(config));
  const log = fs.openSync(path.join(dir, 'orthanc.log'), 'w');
  const child = spawn(ORTHANC, [path.join(dir, 'orthanc.json')], { stdio: ['ignore', log, log] });
  const base = `http://127.0.0.1:${port}`;
  const stop = () => {
    child.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const t0 = Date.now();
  for (;;) {
    const r = await orthancRequest(base, 'GET', '/system').catch(() => null);
    if (r && r.status === 200) break;
    if (Date.now() - t0 > 60000) {
      const text = fs.readFileSync(path.join(dir, 'orthanc.log'), 'utf8');
      stop();
      throw new Error(`Orthanc did not answer within 60 s: ${text.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  for (const f of files) {
    const r = await orthancRequest(base, 'POST', '/instances', fs.readFileSync(f));
    if (r.status !== 200) throw new Error(`uploading ${f} to Orthanc: HTTP ${r.status}`);
  }
  return { base, stop };
}
