// The event log panel: every event on the data channel, client (↑) and server (↓), newest
// first, the JSON body shown when an entry is opened. Bounded, so a long call stays light.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const MAX_ENTRIES = 200;
  const MAX_BODY_CHARS = 4000;
  let total = 0;

  function clock() {
    const now = new Date();
    const pad = (n, width = 2) => String(n).padStart(width, "0");
    return `${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}.${pad(now.getMilliseconds(), 3)}`;
  }

  // from: "client" | "server"
  function add(from, event) {
    total += 1;
    $("event-count").textContent = String(total);
    const entry = document.createElement("li");
    entry.className = `event ${from}`;
    entry.dataset.type = event.type;
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    const time = document.createElement("time");
    time.textContent = clock();
    const arrow = document.createElement("span");
    arrow.className = "dir";
    arrow.textContent = from === "client" ? "↑" : "↓";
    const type = document.createElement("code");
    type.textContent = event.type || "?";
    summary.append(time, arrow, type);
    details.append(summary);
    // The body is written when opened: most entries are never looked at.
    details.addEventListener("toggle", () => details.open && showBody(details, event), { once: true });
    entry.append(details);
    const list = $("event-log");
    list.prepend(entry);
    while (list.children.length > MAX_ENTRIES) list.lastElementChild.remove();
  }

  function showBody(details, event) {
    const body = document.createElement("pre");
    const text = JSON.stringify(event, null, 2);
    body.textContent = text.length > MAX_BODY_CHARS ? text.slice(0, MAX_BODY_CHARS) + "\n…" : text;
    details.append(body);
  }

  window.CosyChat = window.CosyChat || {};
  window.CosyChat.eventLog = { add };
})();
