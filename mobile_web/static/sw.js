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

// an alert pushed by the discovery node (Web Push): shown even with every page closed; one per farm, the
// newer replacing the older, and a tap opens the farm's page, where the alert is acknowledged
self.addEventListener("push", (event) => {
  let message = {};
  try {
    message = event.data ? event.data.json() : {};
  } catch (_) {
    message = { body: event.data ? event.data.text() : "" };
  }
  const url = message.farm_id ? "/farms/" + encodeURIComponent(message.farm_id) : "/alerts";
  event.waitUntil(self.registration.showNotification(message.title || "kubmesh", {
    body: message.body || "", tag: message.farm_id || "kubmesh", renotify: true,
    requireInteraction: message.severity === "critical", icon: "/static/icon-192.png", data: { url },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = new URL((event.notification.data && event.notification.data.url) || "/", self.location.origin).href;
  event.waitUntil(self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
    const open = windows.find((client) => client.url === url);
    return open ? open.focus() : self.clients.openWindow(url);
  }));
});
