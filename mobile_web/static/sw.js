// kubmesh service worker: keeps the app's shell so it opens without a network and says it is offline.
// VERSION, SHELL and OFFLINE are prepended by the server (/sw.js).
"use strict";

const CACHE = "kubmesh-shell-" + VERSION;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((n) => n.startsWith("kubmesh-shell-") && n !== CACHE)
        .map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  if (request.mode === "navigate") {
    // pages are live data: always from the network, the offline shell only when there is none
    event.respondWith(fetch(request).catch(() => caches.open(CACHE).then((cache) => cache.match(OFFLINE))));
    return;
  }
  const path = new URL(request.url).pathname;
  if (SHELL.includes(path)) {
    event.respondWith(caches.open(CACHE).then((cache) => cache.match(path)).then((hit) => hit || fetch(request)));
  }
});

// the page asks for this after the language changed, so that the offline page speaks it too
self.addEventListener("message", (event) => {
  if (event.data === "refresh-offline") {
    event.waitUntil(caches.open(CACHE).then((cache) => cache.add(OFFLINE)));
  }
});
