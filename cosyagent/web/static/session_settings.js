// What the page asks of the session (session.update): instructions, voice, reply length and turn
// detection. Turn detection is the server's own until the user changes it here; then it is
// remembered. The reply length shows the server's until the user changes it on this page.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const STORE_KEY = "turnDetection";
  let chosen = readChosen(); // the user's turn detection, or null: the server's
  let replyLimit = null; // the user's max_output_tokens (a number or "inf"), or null: the server's

  function readChosen() {
    try {
      return JSON.parse(Cosy.stored(STORE_KEY, "null"));
    } catch {
      return null;
    }
  }

  function fromControls() {
    if ($("td-type").value === "semantic_vad") return { type: "semantic_vad", eagerness: $("td-eagerness").value };
    const silence = Math.round(Number($("td-silence").value));
    return { type: "server_vad", silence_duration_ms: Math.min(10000, Math.max(100, silence || 500)) };
  }

  function showControls(detection) {
    $("td-type").value = detection.type;
    if (detection.eagerness) $("td-eagerness").value = detection.eagerness;
    if (detection.silence_duration_ms) $("td-silence").value = String(detection.silence_duration_ms);
    const semantic = detection.type === "semantic_vad";
    $("td-eagerness-field").hidden = !semantic;
    $("td-silence-field").hidden = semantic;
  }

  // An empty field is no limit ("inf"); a number is held to what the server accepts.
  function showLimit(limit) {
    $("max-tokens").value = limit === "inf" ? "" : String(limit);
  }

  function limitFromField() {
    const raw = $("max-tokens").value.trim();
    if (!raw) return "inf";
    return Math.min(4096, Math.max(1, Math.round(Number(raw)) || 1));
  }

  // The session as the server reports it (session.created / updated): its turn detection and
  // reply length, shown until the user sets their own.
  function reflect(session) {
    const detection = session.audio && session.audio.input.turn_detection;
    if (detection && !chosen) showControls(detection);
    const limit = session.max_output_tokens;
    if (replyLimit === null && limit !== undefined) showLimit(limit);
  }

  // The session.update body; turn detection only once the user has chosen one.
  function build() {
    const session = { type: "realtime", instructions: $("instructions").value };
    if (replyLimit !== null) session.max_output_tokens = replyLimit;
    const audio = {};
    if ($("voice").value) audio.output = { voice: $("voice").value };
    // A page that shows the agent's face (data-timestamps="word,viseme") asks for its timings.
    const timestamps = document.body.dataset.timestamps;
    if (timestamps) audio.output = { ...audio.output, timestamps: timestamps.split(",") };
    if (chosen) audio.input = { turn_detection: chosen };
    if (Object.keys(audio).length) session.audio = audio;
    return session;
  }

  // onChange(): the settings changed; the call sends them.
  function bind(onChange) {
    if (chosen) showControls(chosen);
    else showControls({ type: $("td-type").value });
    for (const id of ["td-type", "td-eagerness", "td-silence"]) {
      $(id).addEventListener("change", () => {
        chosen = fromControls();
        Cosy.store(STORE_KEY, JSON.stringify(chosen));
        showControls(chosen);
        onChange();
      });
    }
    $("max-tokens").addEventListener("change", () => {
      replyLimit = limitFromField();
      showLimit(replyLimit);
      onChange();
    });
    $("voice").addEventListener("change", onChange);
    $("instructions").addEventListener("change", onChange);
  }

  window.CosyChat = window.CosyChat || {};
  window.CosyChat.session = { build, bind, reflect };
})();
