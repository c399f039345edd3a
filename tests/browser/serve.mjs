// A minimal static file server for the built app (dist/) on 127.0.0.1, no dependencies.
// Usage as a module: `const { url, close } = await serve(dir)`; or `node serve.mjs DIR [PORT]`.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

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
};

// The app's Content-Security-Policy (from its index.html meta tag), sent as a header on
// every response so that it also governs the worker, as a deployment should.
function csp(root) {
  const html = fs.readFileSync(path.join(root, 'index.html'), 'utf8');
  const m = html.match(/http-equiv="Content-Security-Policy" content="([^"]+)"/);
  if (!m) throw new Error('index.html has no Content-Security-Policy meta tag');
  return m[1];
}

export function serve(root, port = 0) {
  root = path.resolve(root);
  const policy = csp(root);
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://localhost');
    let p = path.normalize(path.join(root, decodeURIComponent(u.pathname)));
    if (!p.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    if (fs.existsSync(p) && fs.statSync(p).isDirectory()) p = path.join(p, 'index.html');
    fs.readFile(p, (err, data) => {
      if (err) {
        res.writeHead(404).end('not found');
        return;
      }
      res.writeHead(200, {
        'content-type': TYPES[path.extname(p)] || 'application/octet-stream',
        'content-length': data.length,
        'cache-control': 'no-cache',
        'content-security-policy': policy,
      });
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
