// The chat transcript: a bubble per user turn and per agent reply. Every reply is kept, with
// its outcome (completed, interrupted, interrupted before speaking, failed, cut at the reply
// length, stopped by a content filter) and its timings.
"use strict";

(function () {
  const { t } = Cosy;
  const $ = (id) => document.getElementById(id);
  const OUTCOME_TAGS = {
    interrupted: "turn.interrupted",
    unspoken: "turn.unspoken",
    failed: "turn.failed",
    cut: "turn.cut",
    filtered: "turn.filtered",
  };
  // Stages in the order they happen; any other timing the server sends is listed after them.
  const STAGES = ["end_of_turn", "asr", "llm_first_token", "first_clause", "tts_first_audio", "first_audio", "voice_to_voice"];
  const CLOCK =
    '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.4" stroke-linecap="round" aria-hidden="true">' +
    '<circle cx="12" cy="13" r="8"/><path d="M12 9v4l2.5 2.5M9 2h6"/></svg>';

  function scrollToEnd() {
    const list = $("transcript");
    list.scrollTop = list.scrollHeight;
  }

  function bubble(kind) {
    $("empty").hidden = true;
    const item = document.createElement("li");
    item.className = `turn ${kind} pending`;
    const who = document.createElement("span");
    who.className = "who";
    who.dataset.i18n = kind === "user" ? "who.user" : "who.agent";
    who.textContent = t(who.dataset.i18n);
    const text = document.createElement("div");
    text.className = "bubble";
    text.textContent = t("turn.listening");
    const meta = document.createElement("div");
    meta.className = "meta";
    item.append(who, text, meta);
    $("transcript").append(item);
    scrollToEnd();
    return item;
  }

  function setText(item, text, key) {
    const el = item.querySelector(".bubble");
    if (key) {
      el.dataset.i18n = key;
      el.textContent = t(key);
    } else {
      delete el.dataset.i18n;
      el.textContent = text;
    }
    el.hidden = !key && !text;
  }

  function tag(item, key, kind, text) {
    const el = document.createElement("span");
    el.className = `tag ${kind}`;
    const label = document.createElement("span");
    if (key) label.dataset.i18n = key;
    label.textContent = key ? t(key) : text;
    if (kind === "latency") el.innerHTML = CLOCK;
    el.append(label);
    item.querySelector(".meta").append(el);
    return el;
  }

  // --- user turns ---------------------------------------------------------------------

  function typedTurn(text) {
    const item = bubble("user");
    item.classList.remove("pending");
    item.classList.add("typed");
    setText(item, text);
    return item;
  }

  function appendUserText(item, delta) {
    const text = item.querySelector(".bubble");
    text.textContent = (item.classList.contains("pending") ? "" : text.textContent) + delta;
    item.classList.remove("pending");
  }

  // The recognized words, null when recognition failed. An empty transcript (a cough, a click)
  // removes the bubble: nothing was said.
  // transcript null: not recognized; failure: the server's error code (unsupported_language...).
  function finishUserTurn(item, transcript, failure) {
    if (transcript !== null && !transcript.trim()) {
      item.remove();
      return;
    }
    item.classList.remove("pending");
    if (transcript === null) {
      setText(item, null, failure === "unsupported_language" ? "turn.other-language" : "turn.unheard");
    }
    else setText(item, transcript);
  }

  // --- agent replies ------------------------------------------------------------------

  function replyTurn() {
    return bubble("agent");
  }

  function appendReplyText(item, text) {
    item.classList.remove("pending");
    setText(item, text);
    scrollToEnd();
  }

  // outcome: completed | interrupted | unspoken | failed | cut | filtered; text: the words to keep.
  function finishReply(item, outcome, text) {
    item.classList.remove("pending");
    item.dataset.outcome = outcome;
    setText(item, text);
    if (OUTCOME_TAGS[outcome]) tag(item, OUTCOME_TAGS[outcome], outcome === "failed" ? "failed" : "interrupted");
  }

  function latencyTag(item, text) {
    tag(item, null, "latency", text);
  }

  // --- timings, shown on demand ---------------------------------------------------------

  // timings: {stage: ms}; the toggle appears with the first one and the list follows it.
  function showTimings(item, timings) {
    const names = Object.keys(timings).filter((name) => typeof timings[name] === "number");
    if (!names.length) return;
    let list = item.querySelector(".timings");
    if (!list) list = addTimings(item);
    names.sort((a, b) => order(a) - order(b));
    const rows = names.flatMap((name) => [term(name), value(timings[name])]);
    list.querySelector("dl").replaceChildren(...rows);
  }

  function addTimings(item) {
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "tag toggle";
    toggle.dataset.i18n = "timings.show";
    toggle.textContent = t("timings.show");
    toggle.setAttribute("aria-expanded", "false");
    item.querySelector(".meta").append(toggle);
    const panel = document.createElement("div");
    panel.className = "timings";
    panel.hidden = true;
    const note = document.createElement("p");
    note.className = "hint";
    note.dataset.i18n = "timings.note";
    note.textContent = t("timings.note");
    panel.append(document.createElement("dl"), note);
    item.append(panel);
    const flip = () => {
      panel.hidden = !panel.hidden;
      toggle.setAttribute("aria-expanded", String(!panel.hidden));
      if (!panel.hidden) scrollToEnd();
    };
    toggle.addEventListener("click", flip);
    return panel;
  }

  function order(name) {
    const index = STAGES.indexOf(name);
    return index < 0 ? STAGES.length : index;
  }

  function term(name) {
    const el = document.createElement("dt");
    const key = "timing." + name;
    if (Cosy.has(key)) {
      el.dataset.i18n = key;
      el.textContent = t(key);
    } else {
      el.textContent = name.replace(/_/g, " ");
    }
    return el;
  }

  function value(ms) {
    const el = document.createElement("dd");
    el.textContent = formatMs(Math.round(ms));
    return el;
  }

  function formatMs(ms) {
    return ms < 10000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  // --- the whole list -------------------------------------------------------------------

  // Hang-up: bubbles still waiting for words ("…") go; everything said stays.
  function clearPending() {
    for (const item of document.querySelectorAll("#transcript .turn.pending")) item.remove();
    const turns = document.querySelectorAll("#transcript .turn").length;
    $("empty").hidden = turns > 0;
  }

  window.CosyChat = window.CosyChat || {};
  window.CosyChat.transcript = {
    typedTurn,
    userTurn: () => bubble("user"),
    appendUserText,
    finishUserTurn,
    replyTurn,
    appendReplyText,
    finishReply,
    latencyTag,
    showTimings,
    clearPending,
    formatMs,
  };
})();
