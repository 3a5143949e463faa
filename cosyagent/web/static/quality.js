// Connection quality from the peer connection's getStats, once a second: the round trip of
// the selected candidate pair, and the jitter and loss of the agent's audio as received here.
// Also how long the agent's audio waits in the receiver's jitter buffer before it is heard
// (over the last second; the call's average at the first reading; 22-80 ms measured on
// loopback, more on a real network). The avatar's face reads the same delay from the receiver,
// more often, through playedOut and bufferDelayMs.
"use strict";

(function () {
  const { t } = Cosy;
  const $ = (id) => document.getElementById(id);
  const EVERY_MS = 1000;
  let timer = null;
  let last = null;

  // The agent's audio played out of the jitter buffer so far, summed over the audio streams in
  // ``reports`` (a getStats() result): seconds waited in the buffer, summed over every sample
  // played out (jitterBufferDelay), and the samples played out (jitterBufferEmittedCount).
  function playedOut(reports) {
    const total = { bufferedS: 0, emitted: 0 };
    reports.forEach((report) => {
      if (report.type !== "inbound-rtp" || report.kind !== "audio") return;
      total.bufferedS += report.jitterBufferDelay || 0;
      total.emitted += report.jitterBufferEmittedCount || 0;
    });
    return total;
  }

  // The audio's average wait in the jitter buffer, in ms, between two playedOut readings; null
  // when none played out between them (or the streams were replaced: fewer samples than before).
  function bufferDelayMs(before, now) {
    const emitted = now.emitted - before.emitted;
    return emitted > 0 ? (1000 * (now.bufferedS - before.bufferedS)) / emitted : null;
  }

  function read(reports) {
    const sample = { rttMs: null, jitterMs: null, packetsLost: 0, packetsReceived: 0, ...playedOut(reports) };
    let pairId = null;
    reports.forEach((report) => {
      if (report.type === "transport" && report.selectedCandidatePairId) pairId = report.selectedCandidatePairId;
    });
    reports.forEach((report) => {
      const selected = pairId ? report.id === pairId : report.nominated && report.state === "succeeded";
      if (report.type === "candidate-pair" && selected && report.currentRoundTripTime !== undefined) {
        sample.rttMs = report.currentRoundTripTime * 1000;
      }
      if (report.type === "inbound-rtp" && report.kind === "audio") {
        if (report.jitter !== undefined) sample.jitterMs = report.jitter * 1000;
        sample.packetsLost += report.packetsLost || 0;
        sample.packetsReceived += report.packetsReceived || 0;
      }
    });
    const before = last && last.emitted <= sample.emitted ? last : { bufferedS: 0, emitted: 0, playoutDelayMs: null };
    const delay = bufferDelayMs(before, sample);
    sample.playoutDelayMs = delay !== null ? delay : before.playoutDelayMs;
    return sample;
  }

  function show(sample) {
    const ms = (value) => (value === null ? "–" : `${Math.round(value)} ms`);
    const sent = sample.packetsLost + sample.packetsReceived;
    const share = sent ? ` (${((100 * sample.packetsLost) / sent).toFixed(1)}%)` : "";
    $("quality").textContent = t("quality.line", ms(sample.rttMs), ms(sample.jitterMs), `${sample.packetsLost}${share}`);
  }

  function start(pc) {
    stop();
    last = null;
    timer = setInterval(async () => {
      if (pc.connectionState === "closed") return;
      try {
        last = read(await pc.getStats());
        show(last);
      } catch (error) {
        console.warn("getStats failed", error);
      }
    }, EVERY_MS);
  }

  function stop() {
    clearInterval(timer);
    timer = null;
  }

  Cosy.onLanguage(() => last && show(last));

  window.CosyChat = window.CosyChat || {};
  window.CosyChat.quality = {
    start,
    stop,
    playedOut,
    bufferDelayMs,
    get last() {
      return last;
    },
  };
})();
