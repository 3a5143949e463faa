// The avatar page: the voice chat page with a face whose mouth follows the agent's visemes.
// The session asks for timestamps (response.output_audio_timestamps.delta, data channel); each
// viseme's start_ms is on the clock of the reply's audio, which starts playing at
// output_audio_buffer.started. Audio can stall between clauses on a busy server (a gap in the
// media track): events then arrive just as their audio plays, so an event whose audio_start_ms
// should already be playing by the clock, arriving while the voice is quiet, moves the clock on.
// The clock starts when the reply's first voiced mark is heard: the page's analyser of the
// agent's audio says when the voice starts, whatever the network, jitter buffer and audio output
// added (in one test run that was 300 ms more than the jitter buffer's own delay). Without a
// voice within VOICE_WAIT_MS, the clock starts at output_audio_buffer.started plus the jitter
// buffer's delay. That delay is measured here from the receiver's stats every JITTER_EVERY_MS,
// and the clock follows its changes. No external assets: inline SVG.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const DEFAULT_PLAYOUT_DELAY_MS = 60; // until the jitter buffer has been measured
  const VOICE_RMS = 0.01; // the agent's audio is this loud once its voice starts (silence: 0)
  const VOICE_WAIT_MS = 1000; // how long past the expected start the face waits to hear the voice
  const JITTER_EVERY_MS = 200; // how often the jitter buffer's delay is measured
  // The agent's audio in the receiver's jitter buffer, from its stats: the last reading, and the
  // delay over the latest interval that played audio.
  const jitter = { read: null, delayMs: null };
  const playoutDelayMs = () => (jitter.delayMs !== null ? jitter.delayMs : DEFAULT_PLAYOUT_DELAY_MS);
  // Mouth shapes of the 15 Oculus visemes: [width, opening, roundness 0..1], in face units.
  const SHAPES = {
    sil: [40, 2, 0], PP: [36, 0, 0], FF: [42, 5, 0], TH: [44, 8, 0], DD: [44, 12, 0.1],
    kk: [44, 15, 0.1], CH: [32, 14, 0.6], SS: [50, 5, 0], nn: [44, 10, 0], RR: [34, 13, 0.5],
    aa: [46, 32, 0.2], E: [50, 20, 0.1], ih: [52, 12, 0], oh: [32, 26, 0.8], ou: [24, 18, 1],
  };
  const face = {
    response: null, // the response whose audio is playing
    anchor: null, // performance.now() when its audio's ms 0 is heard
    expected: null, // before the voice is heard: when ms 0 should be heard, by the network's delay
    delayAtAnchor: 0, // the jitter buffer's delay as of the anchor; null: not measured yet
    anchoredAt: null, // performance.now() when the anchor was set
    visemes: [], // [{viseme, start_ms}] of the response, in order
    words: [], // [{text, start_ms, end_ms}]
    shown: "sil",
    samples: [], // for tests: [{at, viseme}] of every change
    resyncs: [], // for tests: [{at, shift_ms}] each time a stall moved the clock
  };

  function buildFace() {
    const wrap = document.createElement("figure");
    wrap.className = "avatar";
    wrap.innerHTML = `
      <svg id="avatar-face" viewBox="0 0 200 200" role="img" data-viseme="sil">
        <title data-i18n="avatar.label">The agent's face</title>
        <circle cx="100" cy="100" r="88" class="avatar-skin"/>
        <ellipse cx="70" cy="82" rx="9" ry="11" class="avatar-eye"/>
        <ellipse cx="130" cy="82" rx="9" ry="11" class="avatar-eye"/>
        <path d="M56 62 q14 -10 28 0 M116 62 q14 -10 28 0" class="avatar-brow"/>
        <path id="avatar-mouth" class="avatar-mouth" d=""/>
        <path id="avatar-teeth" class="avatar-teeth" d=""/>
      </svg>
      <figcaption id="avatar-word" class="avatar-word">&nbsp;</figcaption>`;
    const panel = document.querySelector(".panel.call");
    panel.insertBefore(wrap, panel.querySelector(".meters"));
    drawMouth("sil");
  }

  // A mouth as two lip curves around (100, 140): wider or rounder, more or less open.
  function drawMouth(viseme) {
    const [width, open, round] = SHAPES[viseme] || SHAPES.sil;
    const half = width / 2;
    const bulge = open / 2 + 2 + round * 4;
    const x0 = 100 - half;
    const x1 = 100 + half;
    const y = 140;
    const upper = `M${x0} ${y} C${x0 + half * 0.4} ${y - bulge} ${x1 - half * 0.4} ${y - bulge} ${x1} ${y}`;
    const lower = `C${x1 - half * 0.4} ${y + bulge + open / 2} ${x0 + half * 0.4} ${y + bulge + open / 2} ${x0} ${y}Z`;
    $("avatar-mouth").setAttribute("d", open > 0 ? `${upper} ${lower}` : `M${x0} ${y} L${x1} ${y}`);
    const teeth = viseme === "FF" || viseme === "SS" || viseme === "TH" || viseme === "E" || viseme === "ih";
    $("avatar-teeth").setAttribute("d", teeth ? `M${x0 + 6} ${y - 1} L${x1 - 6} ${y - 1}` : "");
    $("avatar-face").dataset.viseme = viseme;
  }

  function reset(responseId) {
    face.response = responseId;
    face.anchor = null;
    face.expected = null;
    face.visemes = [];
    face.words = [];
  }

  function onServerEvent(event) {
    const now = performance.now();
    switch (event.type) {
      case "response.created":
        reset(event.response.id);
        break;
      case "response.output_audio_timestamps.delta": {
        if (event.response_id !== face.response) reset(event.response_id);
        face.visemes.push(...event.visemes);
        face.words.push(...event.words);
        // A stall: the audio after this event cannot be heard before the event arrived. (Its
        // first mark may lie up to a piece later; re-syncing on that would put the face ahead.)
        // Only while the voice is quiet: a page too busy to handle the event on time while the
        // audio plays on is no stall, and moving the clock then would leave the face behind the
        // voice for the rest of the reply (the clock only ever moves later).
        const start = event.audio_start_ms;
        if (face.anchor !== null && start !== undefined && face.anchor + start < now && !voiceHeard()) {
          const anchor = face.anchor;
          setClock(now + playoutDelayMs() - start, playoutDelayMs());
          face.resyncs.push({ at: Math.round(now), shift_ms: Math.round(face.anchor - anchor) });
          if (face.resyncs.length > 100) face.resyncs.shift();
        }
        break;
      }
      case "output_audio_buffer.started":
        if (event.response_id === face.response) face.expected = now + playoutDelayMs();
        break;
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        if (event.response_id === face.response) reset(null);
        break;
    }
  }

  function current(marks, t) {
    let found = null;
    for (const mark of marks) {
      if (mark.start_ms > t) break;
      found = mark;
    }
    return found;
  }

  function agentLevel() {
    const node = window.cosyagent && window.cosyagent.call && window.cosyagent.call.agentAnalyser;
    return node ? Cosy.rms(node) : null; // null: no analyser to listen with
  }

  // Whether the agent's voice is heard at ``level`` (the analyser's now, unless given).
  function voiceHeard(level = agentLevel()) {
    return level !== null && level >= VOICE_RMS;
  }

  // Before the voice is heard: start the clock when it is (at the first mouth shape that is not
  // rest), or at the expected time once waiting longer makes no sense.
  function startClock(now) {
    const voiced = face.visemes.find((mark) => mark.viseme !== "sil");
    const level = agentLevel();
    if (voiced && voiceHeard(level)) {
      setClock(now - voiced.start_ms, null);
    } else if (level === null || now > face.expected + (voiced ? voiced.start_ms : 0) + VOICE_WAIT_MS) {
      setClock(face.expected, playoutDelayMs());
    }
  }

  // ms 0 of the reply is heard at ``anchor``, with the jitter buffer's delay at ``delay``; null
  // for a voice heard: it came with whatever delay there was, and the first interval measured
  // after it is the baseline. (The delay measured before it as the baseline counted again the
  // growth the voice was heard with, as the buffer grows when a reply starts on a busy machine or
  // a far network: the face 100-220 ms behind the voice in tests.)
  function setClock(anchor, delay) {
    face.anchor = anchor;
    face.expected = null;
    face.delayAtAnchor = delay;
    face.anchoredAt = performance.now();
  }

  // The receiver's jitter buffer grows on a busy machine (35 -> 173 ms within one reply in a test
  // run): audio is then heard later than the clock says, so the clock follows its changes.
  function followPlayoutDelay() {
    if (face.delayAtAnchor === null) return;
    const delay = playoutDelayMs();
    face.anchor += delay - face.delayAtAnchor;
    face.delayAtAnchor = delay;
  }

  // The jitter buffer's delay over the interval since the last reading (the audio's wait in it,
  // per sample played out), if it played audio.
  async function measureJitterBuffer() {
    const pc = window.cosyagent && window.cosyagent.call && window.cosyagent.call.pc;
    const receiver = pc && pc.getReceivers().find((r) => r.track && r.track.kind === "audio");
    if (!receiver) {
      jitter.read = null;
      return;
    }
    const { playedOut, bufferDelayMs } = window.CosyChat.quality;
    const at = performance.now();
    const read = { at, ...playedOut(await receiver.getStats()) };
    const before = jitter.read;
    jitter.read = read;
    const delay = before ? bufferDelayMs(before, read) : null;
    if (delay === null) return;
    jitter.delayMs = delay;
    if (face.anchor !== null && face.delayAtAnchor === null && before.at >= face.anchoredAt) {
      face.delayAtAnchor = jitter.delayMs;
    }
  }

  function frame() {
    let viseme = "sil";
    let word = "";
    if (face.anchor === null && face.expected !== null) startClock(performance.now());
    if (face.anchor !== null) {
      followPlayoutDelay();
      const t = performance.now() - face.anchor;
      const mark = current(face.visemes, t);
      if (mark) viseme = mark.viseme;
      const spoken = current(face.words, t);
      if (spoken && t <= spoken.end_ms + 150) word = spoken.text;
    }
    if (viseme !== face.shown) {
      face.shown = viseme;
      drawMouth(viseme);
      face.samples.push({ at: Math.round(performance.now()), viseme });
      if (face.samples.length > 5000) face.samples.splice(0, 1000);
    }
    const caption = $("avatar-word");
    if (caption.dataset.word !== word) {
      caption.dataset.word = word;
      caption.textContent = word || "\u00a0";
    }
    requestAnimationFrame(frame);
  }

  document.addEventListener("DOMContentLoaded", () => {
    buildFace();
    document.addEventListener("cosy:server-event", (event) => onServerEvent(event.detail));
    requestAnimationFrame(frame);
    setInterval(() => measureJitterBuffer().catch((error) => console.warn("getStats failed", error)), JITTER_EVERY_MS);
  });
  window.cosyAvatar = face;
})();
