// kubmesh mobile web: live values over Server-Sent Events, commands with their acknowledgement.
"use strict";

(function () {
  const body = document.body;
  const i18n = JSON.parse(body.dataset.i18n || "{}");
  const pollInterval = parseFloat(body.dataset.pollInterval || "5");
  const csrfToken = (document.querySelector('meta[name="csrf-token"]') || {}).content;

  function formatTime(date) {
    if (!date || isNaN(date.getTime()) || date.getTime() === 0) return "—";
    const seconds = Math.round((Date.now() - date.getTime()) / 1000);
    if (seconds < 60) return Math.max(seconds, 0) + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    return date.toLocaleString(document.documentElement.lang);
  }

  function refreshTimes() {
    document.querySelectorAll("time[data-ts]").forEach((el) => {
      const ts = parseInt(el.dataset.ts, 10);
      el.textContent = ts ? formatTime(new Date(ts * 1000)) : "—";
    });
    document.querySelectorAll("time[data-ts-iso]").forEach((el) => {
      el.textContent = new Date(el.dataset.tsIso).toLocaleTimeString(document.documentElement.lang);
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

  function connect(url, handlers) {
    const source = new EventSource(url);
    const banner = document.getElementById("connection");
    source.onopen = () => { if (banner) banner.hidden = true; };
    source.onerror = () => { if (banner) banner.hidden = false; };
    Object.entries(handlers).forEach(([type, handler]) => {
      source.addEventListener(type, (event) => handler(JSON.parse(event.data)));
    });
    return source;
  }

  // ---- the farm list ------------------------------------------------------------------------------
  function farmList(main) {
    const card = (farm) => main.querySelector(`[data-farm="${CSS.escape(farm)}"]`);
    connect(main.dataset.stream, {
      state: (data) => {
        const el = card(data.farm);
        if (!el) return;
        const temp = el.querySelector('[data-value="temp_inside"]');
        if (temp) temp.textContent = formatValue(temp, data.values.temp_inside);
        el.querySelector("time[data-ts]").dataset.ts = Math.floor(Date.now() / 1000);
        el.classList.remove("stale");
        refreshTimes();
      },
      status: (data) => {
        const el = card(data.farm);
        if (!el) { if (data.state === "online") location.reload(); return; }
        setPresence(el, data.state === "online");
        el.classList.toggle("stale", data.state !== "online");
      },
      alarms: (data) => {
        const el = card(data.farm);
        if (!el) return;
        const badge = el.querySelector("[data-alarm-count]");
        badge.textContent = data.active.length;
        badge.classList.toggle("hidden", data.active.length === 0);
        el.classList.toggle("alarming", data.active.length > 0);
      },
    });
  }

  // ---- one farm -----------------------------------------------------------------------------------
  function farmPage(main) {
    let updated = parseInt(main.dataset.updated || "0", 10) * 1000;
    let online = main.dataset.online === "true";
    const pending = new Map();

    function markStale() {
      const old = Date.now() - updated > 2 * pollInterval * 1000 + 1500;
      main.classList.toggle("stale", !online || (old && updated > 0) || updated === 0);
    }

    function renderAlarms(data) {
      ["active", "latched", "warnings", "latched_warnings"].forEach((key) => {
        const list = main.querySelector(`[data-alarm-list="${key}"] ul`);
        if (!list) return;
        list.replaceChildren();
        const items = data[key] || [];
        if (!items.length) {
          const li = document.createElement("li");
          li.className = "muted";
          li.textContent = i18n.none;
          list.appendChild(li);
        }
        items.forEach((item) => {
          const li = document.createElement("li");
          li.textContent = item.label;
          list.appendChild(li);
        });
      });
      main.querySelector("[data-alarms]").classList.toggle("alarming", (data.active || []).length > 0);
    }

    connect(main.dataset.stream, {
      state: (data) => {
        updated = Date.now();
        Object.entries(data.values).forEach(([name, value]) => {
          const box = main.querySelector(`.value[data-name="${CSS.escape(name)}"]`);
          if (!box) return;
          const status = (data.status || {})[name] || "ok";
          box.dataset.status = status;
          box.querySelector("[data-value]").textContent = formatValue(box.querySelector("[data-value]"), value);
          box.querySelector("[data-status-text]").textContent = status === "ok" ? "" : i18n[status] || status;
        });
        main.querySelector(".status-line time").dataset.ts = Math.floor(updated / 1000);
        refreshTimes();
        markStale();
      },
      status: (data) => {
        online = data.state === "online";
        setPresence(main, online);
        markStale();
      },
      alarms: renderAlarms,
      events: (data) => {
        const list = main.querySelector("[data-events]");
        list.querySelectorAll(".muted").forEach((el) => el.remove());
        const li = document.createElement("li");
        const time = document.createElement("time");
        time.textContent = new Date(data.ts).toLocaleTimeString(document.documentElement.lang);
        li.append(time, " " + data.message);
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
        const response = await fetch(`${location.pathname}/commands`, {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
          body: JSON.stringify({ name: form.dataset.command, value: value }),
        });
        const answer = await response.json().catch(() => ({}));
        if (response.ok) {
          pending.set(answer.id, form);
        } else {
          result.textContent = i18n.refused + ": " + (answer.error || response.status);
          result.className = "command-result refused";
        }
      });
    });

    setInterval(markStale, 1000);
    markStale();
  }

  document.addEventListener("DOMContentLoaded", () => {
    refreshTimes();
    setInterval(refreshTimes, 5000);
    const list = document.getElementById("farm-list");
    if (list) farmList(list);
    const farm = document.getElementById("farm");
    if (farm) farmPage(farm);
  });
})();
