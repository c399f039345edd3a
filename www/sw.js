// Service worker: the app shell works offline after the first visit, and nothing else is
// ever kept. Only the files of SHELL (this build's app code and the two bundled samples)
// are cached, in a cache named after the build; old caches are deleted on activate.
// Every other request (a DICOM opened by URL, a WADO proxy, anything of the user's) is
// not touched: it goes to the network as if there were no service worker, so patient
// data never lands in a cache here, and offline such a request fails instead of being
// answered with another file. The weights are cached by the worker itself (sha256
// checked), not here. Nothing is ever sent anywhere.
// Replaced by the build (scripts/web_assets.sh) with a hash of the engine, so every
// build has its own cache and the previous one is deleted.
const VERSION = 'dev';
const CACHE = `medfm-app-${VERSION}`;
// Kept by the worker (www/worker.js), not by this service worker: left alone on activate.
const WEIGHTS_CACHE = 'medfm-weights-v1';
const SHELL = [
  './', 'index.html', 'medfm-wasm.js', 'medfm-wasm_bg.wasm',
  'www/app.js', 'www/state.js', 'www/export.js', 'www/pacs.js', 'www/medfm.js', 'www/worker.js',
  'www/display.js', 'www/app.css',
  'shaders/display.wgsl',
  'samples/index.json', 'samples/abdomen_mr.dcm', 'samples/head_ct.dcm',
];
const SCOPE = new URL(self.registration.scope);
// Absolute paths of the shell, for the allowlist check.
const SHELL_PATHS = new Set(SHELL.map((p) => new URL(p, SCOPE).pathname));

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (e) => {
  e.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name !== CACHE && name !== WEIGHTS_CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== 'GET' || url.origin !== self.location.origin) return;
  const navigation = e.request.mode === 'navigate';
  // The shell only; a navigation to the app (any query string: ?backend=cpu) is the
  // shell's index.
  const key = navigation && (url.pathname === SCOPE.pathname || url.pathname === `${SCOPE.pathname}index.html`)
    ? new URL('index.html', SCOPE).href
    : SHELL_PATHS.has(url.pathname) && !url.search ? url.href : null;
  if (!key) return;
  e.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      // Network first, so a new build is picked up at once.
      const resp = await fetch(e.request);
      if (resp.ok) {
        // A full disk (quota) must not turn a good response into a failure.
        try {
          await cache.put(key, resp.clone());
        } catch (err) {
          console.warn(`medfm service worker: not cached (${err.message})`);
        }
      }
      return resp;
    } catch (err) {
      const hit = await cache.match(key);
      if (hit) return hit;
      throw err;
    }
  })());
});
