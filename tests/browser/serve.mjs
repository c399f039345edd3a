// A minimal static file server for the built app (dist/) on 127.0.0.1, no dependencies.
// Usage as a module: `const { url, close } = await serve(dir, options)`; or
// `node serve.mjs DIR [PORT]`.
//
// Options (for the browser test):
// - csp: send the app's Content-Security-Policy header (default true); with false, the
//   policy is also removed from index.html, so nothing stops a foreign request and the
//   test sees every request the code makes; a string: that policy (an app, such as OHIF's
//   build, whose index.html has none);
// - fallback: the file answered for a path with no file (a single-page app's routes);
// - gzip: send .bpk files gzip-encoded (Content-Length is then the compressed size);
// - files: extra paths (any query string) answered with given bytes, e.g. a DICOM opened
//   by URL as from a same-origin WADO proxy;
// - redirects: paths answered with a 302 to a given URL;
// - proxy: {'/dicom-web': 'http://127.0.0.1:8042'} (or {target, throttleMs}): requests
//   under a path prefix passed on to another server (same path, method, headers and
//   body), as a deployment serves the app behind the same reverse proxy as its PACS;
//   `headers` are added to each request passed on (the proxy's credentials).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.wgsl': 'text/plain; charset=utf-8',
  '.png': 'image/png',
  '.dcm': 'application/dicom',
  '.bpk': 'application/octet-stream',
  '.svg': 'image/svg+xml',
  '.woff2': 'font/woff2',
};

const META_CSP = /<meta http-equiv="Content-Security-Policy" content="([^"]+)">/;

// The app's Content-Security-Policy (from its index.html meta tag), sent as a header on
// every response so that it also governs the worker, as a deployment should.
export function csp(root) {
  const html = fs.readFileSync(path.join(root, 'index.html'), 'utf8');
  const m = html.match(META_CSP);
  if (!m) throw new Error('index.html has no Content-Security-Policy meta tag');
  return m[1];
}

// The file under `root` that a request path names, or null when it is malformed or
// leaves `root` (`..`, encoded or not; a sibling folder whose name starts like root's).
export function resolvePath(root, pathname) {
  let decoded;
  try {
    decoded = decodeURIComponent(pathname);
  } catch {
    return null;
  }
  if (decoded.includes('\0')) return null;
  const p = path.resolve(path.join(root, decoded));
  if (p !== root && !p.startsWith(root + path.sep)) return null;
  return p;
}

// Pass `req` on to the server at `target` (an origin) and its answer back, streamed;
// with `throttleMs`, each chunk of the answer is followed by that pause (a slow link).
export function forward(req, res, target, extraHeaders = {}, throttleMs = 0, requestHeaders = {}) {
  const t = new URL(target);
  const headers = { ...req.headers, ...requestHeaders, host: t.host };
  delete headers.origin;
  delete headers.referer;
  const out = http.request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers }, (back) => {
    res.writeHead(back.statusCode, { ...back.headers, ...extraHeaders });
    if (!throttleMs) {
      back.pipe(res);
      return;
    }
    back.on('data', (chunk) => {
      back.pause();
      res.write(chunk);
      setTimeout(() => back.resume(), throttleMs);
    });
    back.on('end', () => res.end());
  });
  out.on('error', (e) => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`proxy: ${e.message}`);
  });
  req.pipe(out);
}

export function serve(root, options = {}) {
  const { port = 0, csp: withCsp = true, gzip = false, files = {}, redirects = {}, proxy = {}, fallback = null } =
    typeof options === 'number' ? { port: options } : options;
  root = path.resolve(root);
  const policy = typeof withCsp === 'string' ? withCsp : withCsp ? csp(root) : null;
  const gzipped = new Map();
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://localhost');
    const headers = { 'cache-control': 'no-cache' };
    if (policy) headers['content-security-policy'] = policy;
    const prefix = Object.keys(proxy).find((p) => u.pathname === p || u.pathname.startsWith(`${p}/`));
    if (prefix) {
      const p = typeof proxy[prefix] === 'string' ? { target: proxy[prefix] } : proxy[prefix];
      forward(req, res, p.target, {}, p.throttleMs, p.headers);
      return;
    }
    if (redirects[u.pathname]) {
      res.writeHead(302, { ...headers, location: redirects[u.pathname] }).end();
      return;
    }
    if (files[u.pathname]) {
      const data = files[u.pathname];
      res.writeHead(200, { ...headers, 'content-type': TYPES['.dcm'], 'content-length': data.length });
      res.end(data);
      return;
    }
    let p = resolvePath(root, u.pathname);
    if (!p) {
      res.writeHead(400).end('bad path');
      return;
    }
    if (fs.existsSync(p) && fs.statSync(p).isDirectory()) p = path.join(p, 'index.html');
    if (fallback && !fs.existsSync(p)) p = path.join(root, fallback);
    fs.readFile(p, (err, data) => {
      if (err) {
        res.writeHead(404).end('not found');
        return;
      }
      if (!withCsp && path.basename(p) === 'index.html') {
        data = Buffer.from(data.toString('utf8').replace(META_CSP, ''));
      }
      const type = TYPES[path.extname(p)] || 'application/octet-stream';
      if (gzip && p.endsWith('.bpk') && /\bgzip\b/.test(req.headers['accept-encoding'] || '')) {
        if (!gzipped.has(p)) gzipped.set(p, zlib.gzipSync(data, { level: 1 }));
        data = gzipped.get(p);
        headers['content-encoding'] = 'gzip';
      }
      res.writeHead(200, { ...headers, 'content-type': type, 'content-length': data.length });
      res.end(data);
    });
  });
  return new Promise((resolve) => {
    server.listen(port, '127.0.0.1', () => {
      let open = true;
      // Also drop keep-alive connections, so a closed server is really unreachable.
      const close = () => {
        if (open) {
          open = false;
          server.close();
          server.closeAllConnections();
        }
      };
      resolve({ url: `http://127.0.0.1:${server.address().port}/`, close });
    });
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { url } = await serve(process.argv[2] || 'dist', Number(process.argv[3] || 8080));
  console.log(`serving ${process.argv[2] || 'dist'} at ${url}`);
}
