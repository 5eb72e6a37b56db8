// kubmesh mobile web: live values over Server-Sent Events, commands with their acknowledgement,
// history charts drawn as SVG, and the service worker that keeps the shell for offline use.
"use strict";

(function () {
  const body = document.body;
  const i18n = JSON.parse(body.dataset.i18n || "{}");
  const csrfToken = (document.querySelector('meta[name="csrf-token"]') || {}).content;
  const lang = document.documentElement.lang;
  const SVG = "http://www.w3.org/2000/svg";
  const SLACK_MS = 1500; // a reading in flight is not yet late

  function formatTime(date) {
    if (!date || isNaN(date.getTime()) || date.getTime() === 0) return "—";
    const seconds = Math.round((Date.now() - date.getTime()) / 1000);
    if (seconds < 60) return i18n.seconds.replace("{n}", Math.max(seconds, 0));
    if (seconds < 3600) return i18n.minutes.replace("{n}", Math.round(seconds / 60));
    return date.toLocaleString(lang);
  }

  function refreshTimes() {
    document.querySelectorAll("time[data-ts]").forEach((el) => {
      const ts = parseInt(el.dataset.ts, 10);
      el.textContent = ts ? formatTime(new Date(ts * 1000)) : "—";
    });
    document.querySelectorAll("time[data-ts-iso]").forEach((el) => {
      el.textContent = new Date(el.dataset.tsIso).toLocaleTimeString(lang);
    });
  }

  function formatValue(el, value) {
    if (value === null || value === undefined) return "—";
    if (el.dataset.options) return JSON.parse(el.dataset.options)[String(value)] || String(value);
    const decimals = el.dataset.decimals;
    if (decimals !== undefined && typeof value === "number") return value.toFixed(parseInt(decimals, 10));
    return String(value);
  }

  function setPresence(scope, online) {
    scope.querySelectorAll("[data-presence]").forEach((el) => {
      el.textContent = online ? i18n.online : i18n.offline;
      el.classList.toggle("online", online);
      el.classList.toggle("offline", !online);
    });
  }

  // A raised bit in the page's language (the server's rule, mobile_web/farms.py alarm_text): its labels,
  // or for a bit the farm's profile does not name, its number; an older agent's label text as it is.
  function alarmLabel(main, kind, bit, label, labels) {
    if (labels) return labels[lang] || labels.en;
    if (main.dataset.namesBits !== "true") return label;
    return (kind === "alarm" ? i18n.alarm_bit : i18n.warning_bit).replace("{bit}", bit);
  }

  // The server's rule (mobile_web/farms.py stale_after): values older than two poll intervals are
  // stale, or two minutes while the heartbeat says the controller answers; an offline farm is stale.
  function isStale(el) {
    const updated = parseInt(el.dataset.updated || "0", 10) * 1000;
    const twoPolls = parseFloat(el.dataset.twoPolls || "10");
    const limit = el.dataset.heartbeatOk === "true" ? Math.max(twoPolls, parseFloat(el.dataset.grace)) : twoPolls;
    return el.dataset.online !== "true" || updated === 0 || Date.now() - updated > limit * 1000 + SLACK_MS;
  }

  function connect(url, handlers) {
    const source = new EventSource(url);
    const banner = document.getElementById("connection");
    source.onopen = () => { if (banner) banner.hidden = true; };
    source.onerror = () => { if (banner) banner.hidden = navigator.onLine === false; };
    // the server restarted or this page missed more than it keeps: render afresh
    source.addEventListener("resync", () => location.reload());
    Object.entries(handlers).forEach(([type, handler]) => {
      source.addEventListener(type, (event) => handler(JSON.parse(event.data)));
    });
    return source;
  }

  // ---- the farm list ------------------------------------------------------------------------------
  function farmList(main) {
    const card = (farm) => main.querySelector(`[data-farm="${CSS.escape(farm)}"]`);
    const lists = () => main.querySelectorAll("ul.farms"); // one per site, farms without a site last

    const noFarms = main.querySelector("[data-no-farms]");
    const shown = new Map(); // farm → the newest card request, so an older answer never wins
    const loading = new Set(); // farms whose card is being fetched
    const changed = new Set(); // ...and that changed meanwhile: the answer may predate it, so fetch again

    // an event for a farm without a card: nothing to update, unless its card is on its way
    function missing(farm) {
      if (loading.has(farm)) changed.add(farm);
    }

    function markStale() {
      main.querySelectorAll("[data-farm]").forEach((el) => el.classList.toggle("stale", isStale(el)));
    }

    // the list of a site's farms (the server's grouping, mobile_web/farms.py by_site): made when a farm of a
    // new site appears, before the farms without a site, which come last
    function heading(list) {
      const before = list.previousElementSibling;
      return before && before.matches("h2.site") ? before : null;
    }

    function siteList(site) {
      const found = Array.from(lists()).find((list) => list.dataset.site === site);
      if (found) return found;
      const list = document.createElement("ul");
      list.className = "farms";
      list.dataset.site = site;
      const unsited = Array.from(lists()).find((other) => other.dataset.site === "");
      const anchor = unsited ? heading(unsited) || unsited : null;
      if (anchor) main.insertBefore(list, anchor); else main.appendChild(list);
      const title = (text, before) => {
        const h2 = document.createElement("h2");
        h2.className = "site";
        h2.textContent = text;
        before.before(h2);
      };
      if (site) title(site, list);
      if (unsited && !heading(unsited)) title(main.dataset.otherFarms, unsited); // no longer the only group
      if (!site && lists().length > 1) title(main.dataset.otherFarms, list);
      return list;
    }

    // a card goes; so does its site's list when it was the last one there
    function removeCard(el) {
      const li = el.closest("li");
      const list = li.parentElement;
      li.remove();
      if (list.children.length === 0 && list.dataset.site !== "") {
        const title = heading(list);
        if (title) title.remove();
        list.remove();
      }
    }

    // a farm that appeared (or changed its name) while the list is open: its card as the server renders it
    async function showCard(farm) {
      const mine = (shown.get(farm) || 0) + 1;
      shown.set(farm, mine);
      loading.add(farm);
      changed.delete(farm);
      let html = null;
      try {
        const response = await fetch(main.dataset.cardUrl.replace("FARM", encodeURIComponent(farm)));
        if (response.ok) html = await response.text();
      } catch (error) {
        html = null;
      }
      if (shown.get(farm) !== mine) return; // a newer request is on its way, or the farm went meanwhile
      loading.delete(farm);
      if (html === null) return; // not this user's farm
      if (changed.delete(farm)) { showCard(farm); return; }
      const template = document.createElement("template");
      template.innerHTML = html.trim();
      const fresh = template.content.firstElementChild;
      const old = card(farm);
      if (old) removeCard(old);
      siteList(fresh.dataset.site).appendChild(fresh);
      noFarms.hidden = true;
      markStale();
      refreshTimes();
      sortCards();
    }

    function sortCards() {
      const key = (li) => {
        const el = li.querySelector("[data-farm]");
        const alarms = parseInt(el.querySelector("[data-alarm-count]").textContent, 10) || 0;
        return [-alarms, el.dataset.online === "true" ? 0 : 1, el.querySelector(".name").textContent];
      };
      lists().forEach((list) => {
        const items = Array.from(list.children);
        items.sort((a, b) => {
          const [ka, kb] = [key(a), key(b)];
          return ka[0] - kb[0] || ka[1] - kb[1] || ka[2].localeCompare(kb[2], lang);
        });
        items.forEach((li) => list.appendChild(li));
      });
    }

    connect(main.dataset.stream, {
      state: (data) => {
        const el = card(data.farm);
        if (!el) { missing(data.farm); return; }
        const shown = el.querySelector("[data-value]"); // the farm's main value, as its profile says
        if (shown) shown.textContent = formatValue(shown, data.values[shown.dataset.value]);
        el.dataset.updated = Math.floor(Date.now() / 1000);
        el.querySelector("time[data-ts]").dataset.ts = Math.floor(Date.parse(data.ts) / 1000);
        markStale();
        refreshTimes();
      },
      heartbeat: (data) => {
        const el = card(data.farm);
        if (!el) { missing(data.farm); return; }
        el.dataset.heartbeatOk = String(data.modbus === "ok");
        el.querySelector("time[data-ts]").dataset.ts = Math.floor(Date.parse(data.ts) / 1000);
        markStale();
      },
      status: (data) => {
        const el = card(data.farm);
        if (!el) { missing(data.farm); return; }
        el.dataset.online = String(data.state === "online");
        setPresence(el, data.state === "online");
        markStale();
        sortCards();
      },
      profile: () => location.reload(), // a farm's main value may be another now
      farm_added: (data) => showCard(data.farm),
      meta: (data) => { if (card(data.farm)) showCard(data.farm); else missing(data.farm); }, // name, main value
      farm_removed: (data) => {
        shown.set(data.farm, (shown.get(data.farm) || 0) + 1); // a card request in flight is out of date
        loading.delete(data.farm);
        const el = card(data.farm);
        if (el) removeCard(el);
        noFarms.hidden = main.querySelector("[data-farm]") !== null;
      },
      alarms: (data) => {
        const el = card(data.farm);
        if (!el) { missing(data.farm); return; }
        const badge = el.querySelector("[data-alarm-count]");
        badge.textContent = data.active.length;
        badge.classList.toggle("hidden", data.active.length === 0);
        el.classList.toggle("alarming", data.active.length > 0);
        sortCards();
      },
    });
    setInterval(markStale, 1000);
  }

  // ---- one farm -----------------------------------------------------------------------------------
  function farmPage(main) {
    const pending = new Map();
    const eventTexts = JSON.parse(main.dataset.eventTexts || "{}");
    const namedBits = JSON.parse(main.dataset.alarmLabels || "{}"); // kind → bit → label, from the profile

    function markStale() {
      main.classList.toggle("stale", isStale(main));
    }

    function renderAlarms(data) {
      let any = false;
      const kinds = { active: "alarm", latched: "alarm", warnings: "warning", latched_warnings: "warning" };
      Object.entries(kinds).forEach(([key, kind]) => {
        const group = main.querySelector(`[data-alarm-list="${key}"]`);
        if (!group) return;
        const items = data[key] || [];
        const list = group.querySelector("ul");
        list.replaceChildren(...items.map((item) => {
          const li = document.createElement("li");
          li.textContent = alarmLabel(main, kind, item.bit, item.label, item.labels);
          return li;
        }));
        group.hidden = items.length === 0;
        any = any || items.length > 0;
      });
      main.querySelector("[data-no-alarms]").hidden = any;
      main.querySelector("[data-alarms]").classList.toggle("alarming", (data.active || []).length > 0);
    }

    function valueLabel(name) {
      const label = main.querySelector(`.value[data-name="${CSS.escape(name)}"] .label`);
      return label ? label.textContent : name;
    }

    function eventText(event) {
      const template = eventTexts[event.kind];
      if (!template) return event.message;
      const detail = Object.assign({}, event.detail || {});
      if (/^(alarm|warning)_/.test(event.kind) && typeof detail.bit === "number") {
        const kind = event.kind.split("_")[0];
        const named = (namedBits[kind] || {})[String(detail.bit)];
        detail.label = named || alarmLabel(main, kind, detail.bit, detail.label, null);
      }
      if (event.kind === "sensor_status") {
        detail.name = valueLabel(detail.name);
        detail.from = i18n[detail.from] || detail.from;
        detail.to = i18n[detail.to] || detail.to;
      }
      return template.replace(/\{(\w+)\}/g, (whole, key) => (key in detail ? String(detail[key]) : whole));
    }

    connect(main.dataset.stream, {
      state: (data) => {
        main.dataset.updated = Math.floor(Date.now() / 1000);
        Object.entries(data.values).forEach(([name, value]) => {
          const box = main.querySelector(`.value[data-name="${CSS.escape(name)}"]`);
          if (!box) return;
          const status = (data.status || {})[name] || "ok";
          box.dataset.status = status;
          const valueEl = box.querySelector("[data-value]");
          valueEl.textContent = status === "ok" ? formatValue(valueEl, value) : "—";
          box.querySelector("[data-status-text]").textContent = status === "ok" ? "" : i18n[status] || status;
        });
        main.querySelector(".status-line time").dataset.ts = main.dataset.updated;
        refreshTimes();
        markStale();
      },
      heartbeat: (data) => {
        main.dataset.heartbeatOk = String(data.modbus === "ok");
        markStale();
      },
      status: (data) => {
        main.dataset.online = String(data.state === "online");
        setPresence(main, data.state === "online");
        markStale();
      },
      alarms: renderAlarms,
      // the discovery node's alerts of this farm changed (opened, acknowledged, cleared): render afresh
      alerts: (data) => {
        const shown = [...main.querySelectorAll("[data-alert]")].map((el) => el.dataset.alert + el.dataset.state);
        const now = (data.alerts || []).map((alert) => alert.id + alert.state);
        if (shown.sort().join() !== now.sort().join()) location.reload();
      },
      profile: () => location.reload(), // the farm's agent runs another profile: other values and controls
      events: (data) => {
        const list = main.querySelector("[data-events]");
        list.querySelectorAll(".muted").forEach((el) => el.remove());
        const li = document.createElement("li");
        const time = document.createElement("time");
        time.textContent = new Date(data.ts).toLocaleTimeString(lang);
        li.append(time, " " + eventText(data));
        list.prepend(li);
        while (list.children.length > 20) list.lastElementChild.remove();
      },
      ack: (data) => {
        const form = pending.get(data.id);
        if (!form) return;
        pending.delete(data.id);
        const result = form.querySelector(".command-result");
        result.textContent = data.ok ? i18n.done : i18n.refused + ": " + (data.error || "");
        result.className = "command-result " + (data.ok ? "ok" : "refused");
      },
    });

    main.querySelectorAll("form.command").forEach((form) => {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
        const result = form.querySelector(".command-result");
        result.textContent = i18n.pending_cmd;
        result.className = "command-result pending";
        const value = parseFloat(form.elements.value.value);
        let response;
        try {
          response = await fetch(`${location.pathname}/commands`, {
            method: "POST",
            headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
            body: JSON.stringify({ name: form.dataset.command, value: value }),
          });
        } catch (error) {
          result.textContent = i18n.refused + ": " + i18n.offline;
          result.className = "command-result refused";
          return;
        }
        const answer = await response.json().catch(() => ({}));
        if (response.ok) {
          pending.set(answer.id, form);
        } else {
          result.textContent = i18n.refused + ": " + (answer.error || response.status);
          result.className = "command-result refused";
        }
      });
    });

    const chart = main.querySelector("[data-chart]");
    if (chart) historyChart(chart);
    // the export's times are in this phone's time zone
    const zone = main.querySelector("[data-time-zone]");
    if (zone) zone.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    setInterval(markStale, 1000);
    markStale();
  }

  // ---- the history chart: the discovery node's buckets (min–max band, average line) as SVG --------
  function historyChart(section) {
    const svg = section.querySelector("[data-chart-svg]");
    const note = section.querySelector("[data-chart-note]");
    const select = section.querySelector("[data-chart-name]");
    const buttons = section.querySelectorAll("[data-range]");
    let range = "24h";
    let request = 0;

    function el(name, attrs, text) {
      const node = document.createElementNS(SVG, name);
      Object.entries(attrs).forEach(([key, value]) => node.setAttribute(key, String(value)));
      if (text !== undefined) node.textContent = text;
      return node;
    }

    function draw(data) {
      const points = data.points.map((p) => ({
        t: Date.parse(p.ts), v: p.value, lo: p.min ?? p.value, hi: p.max ?? p.value,
      }));
      svg.replaceChildren();
      section.dataset.points = String(points.length);
      if (!points.length) {
        note.textContent = i18n.no_history;
        return;
      }
      const [w, h, left, right, top, bottom] = [360, 200, 44, 8, 10, 24];
      const t0 = Math.min(...points.map((p) => p.t));
      const t1 = Math.max(...points.map((p) => p.t));
      let lo = Math.min(...points.map((p) => p.lo));
      let hi = Math.max(...points.map((p) => p.hi));
      if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
      const x = (t) => left + (t1 === t0 ? (w - left - right) / 2 : ((t - t0) / (t1 - t0)) * (w - left - right));
      const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (h - top - bottom);
      const fmt = (v) => v.toFixed(data.decimals);

      [lo, (lo + hi) / 2, hi].forEach((v) => {
        svg.append(el("line", { x1: left, x2: w - right, y1: y(v), y2: y(v), class: "grid" }));
        svg.append(el("text", { x: left - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, fmt(v)));
      });
      const band = points.map((p) => `${x(p.t)},${y(p.hi)}`)
        .concat(points.slice().reverse().map((p) => `${x(p.t)},${y(p.lo)}`));
      svg.append(el("polygon", { points: band.join(" "), class: "band" }));
      svg.append(el("polyline", { points: points.map((p) => `${x(p.t)},${y(p.v)}`).join(" "), class: "line" }));
      const last = points[points.length - 1];
      svg.append(el("circle", { cx: x(last.t), cy: y(last.v), r: 3.5, class: "dot" }));
      const when = (t) => (range === "24h"
        ? new Date(t).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" })
        : new Date(t).toLocaleDateString(lang, { day: "numeric", month: "short" }));
      svg.append(el("text", { x: left, y: h - 6, class: "axis", "text-anchor": "start" }, when(t0)));
      svg.append(el("text", { x: w - right, y: h - 6, class: "axis", "text-anchor": "end" }, when(t1)));
      note.textContent = `${select.selectedOptions[0].textContent}: ${fmt(last.v)} ${data.unit}`.trim();
    }

    async function load() {
      const mine = ++request;
      note.textContent = i18n.loading;
      section.classList.add("loading");
      const url = `${section.dataset.url}?name=${encodeURIComponent(select.value)}&range=${range}`;
      let data = null;
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" } });
        if (response.ok) data = await response.json();
      } catch (error) {
        data = null;
      }
      if (mine !== request) return; // a newer choice was made meanwhile
      section.classList.remove("loading");
      if (data) {
        draw(data);
      } else {
        svg.replaceChildren();
        section.dataset.points = "0";
        note.textContent = i18n.history_error;
      }
    }

    select.addEventListener("change", load);
    buttons.forEach((button) => button.addEventListener("click", () => {
      range = button.dataset.range;
      buttons.forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
      load();
    }));
    load();
  }

  // ---- offline: the notice, and the service worker that keeps the shell ---------------------------
  function showOffline() {
    const notice = document.getElementById("offline-notice");
    if (notice && !document.getElementById("offline")) notice.hidden = navigator.onLine !== false;
  }

  function registerServiceWorker() {
    if (!("serviceWorker" in navigator) || !body.dataset.serviceWorker) return;
    // fails where the page is not a secure context (plain HTTP off localhost): the app works without it
    navigator.serviceWorker.register(body.dataset.serviceWorker, { scope: "/" }).catch(() => {});
    navigator.serviceWorker.ready.then((registration) => {
      // the offline page was kept in the language of its day: keep it in this page's language
      if (localStorage.getItem("kubmesh-offline-lang") === lang || !registration.active) return;
      registration.active.postMessage("refresh-offline");
      localStorage.setItem("kubmesh-offline-lang", lang);
    });
  }

  function urlBase64ToBytes(text) {
    const base64 = (text + "=".repeat((4 - (text.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  }

  // "Enable notifications on this phone": the service worker's push subscription, made with the node's
  // VAPID public key, is handed to the web, which keeps it as the user's Web Push channel
  function webPushButton(button) {
    const status = document.querySelector("[data-webpush-status]");
    const say = (ok) => { status.textContent = ok ? status.dataset.ok : status.dataset.failed; };
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        if (!("serviceWorker" in navigator) || !("PushManager" in window)) throw new Error("no push here");
        if ((await Notification.requestPermission()) !== "granted") throw new Error("not allowed");
        const registration = await navigator.serviceWorker.ready;
        const subscription = await registration.pushManager.subscribe({
          userVisibleOnly: true, applicationServerKey: urlBase64ToBytes(button.dataset.webpush) });
        const answer = await fetch(button.dataset.webpushUrl, {
          method: "POST", headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
          body: JSON.stringify(subscription.toJSON ? subscription.toJSON() : subscription) });
        if (!answer.ok) throw new Error("refused");
        say(true);
        location.reload();
      } catch (_) {
        say(false);
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    refreshTimes();
    setInterval(refreshTimes, 5000);
    showOffline();
    window.addEventListener("online", showOffline);
    window.addEventListener("offline", showOffline);
    document.querySelectorAll("[data-action=reload]").forEach((button) => {
      button.addEventListener("click", () => location.reload());
    });
    registerServiceWorker();
    const list = document.getElementById("farm-list");
    if (list) farmList(list);
    const farm = document.getElementById("farm");
    if (farm) farmPage(farm);
    const push = document.querySelector("[data-webpush]");
    if (push) webPushButton(push);
  });
})();
