// Service worker: the app works offline after the first visit. Same-origin GETs go to the
// network first (a new build is picked up at once) and fall back to this cache; the
// app shell is precached at install. The weights (/weights/) are cached by the worker
// itself (sha256-checked), not here. Nothing is ever sent anywhere.
const CACHE = 'medfm-app-v1';
const SHELL = [
  './', 'index.html', 'medfm.js', 'medfm_bg.wasm',
  'www/app.js', 'www/medfm.js', 'www/worker.js', 'www/display.js', 'www/app.css',
  'shaders/window_level.wgsl',
  'samples/index.json', 'samples/abdomen_mr.dcm', 'samples/head_ct.dcm',
];

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (url.pathname.includes('/weights/')) return;
  e.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const resp = await fetch(e.request);
      if (resp.ok) await cache.put(e.request, resp.clone());
      return resp;
    } catch (err) {
      const hit = await cache.match(e.request, { ignoreSearch: true });
      if (hit) return hit;
      throw err;
    }
  })());
});
