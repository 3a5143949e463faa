// The TTS playground: POST v1/audio/speech (streamed WAV), played from the first chunk on.
"use strict";

(function () {
  const { t } = Cosy;
  const $ = (id) => document.getElementById(id);

  const run = {
    abort: null,
    audio: null, // AudioContext
    sources: [],
    nextTime: 0,
    chunks: [], // Int16Array pieces, mono
    rate: 24000,
    ticker: null,
    error: null,
  };
  const results = { firstPacketMs: null, totalMs: null, audioSeconds: null, bytes: 0, playing: false, done: false };

  // --- a WAV read as it streams in --------------------------------------------------------

  class WavStream {
    constructor() {
      this.pending = new Uint8Array(0);
      this.inData = false;
      this.channels = 1;
      this.rate = 24000;
      this.bits = 16;
    }

    // Bytes in, mono int16 samples out (whatever is complete so far).
    push(bytes) {
      const joined = new Uint8Array(this.pending.length + bytes.length);
      joined.set(this.pending);
      joined.set(bytes, this.pending.length);
      let offset = 0;
      const view = new DataView(joined.buffer);
      if (!this.inData) {
        offset = this.readHeader(joined, view);
        if (offset < 0) {
          this.pending = joined;
          return new Int16Array(0);
        }
      }
      const frame = (this.bits / 8) * this.channels;
      const usable = joined.length - offset - ((joined.length - offset) % frame);
      const frames = usable / frame;
      const out = new Int16Array(frames);
      for (let i = 0; i < frames; i++) {
        let sum = 0;
        for (let c = 0; c < this.channels; c++) sum += view.getInt16(offset + i * frame + c * 2, true);
        out[i] = sum / this.channels;
      }
      this.pending = joined.slice(offset + usable);
      return out;
    }

    // The offset of the first audio byte, or -1 until the header is complete.
    readHeader(bytes, view) {
      const tag = (at) => String.fromCharCode(...bytes.subarray(at, at + 4));
      if (bytes.length < 12) return -1;
      if (tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("the server did not send a WAV stream");
      let at = 12;
      while (at + 8 <= bytes.length) {
        const id = tag(at);
        const size = view.getUint32(at + 4, true);
        if (id === "data") {
          this.inData = true;
          return at + 8;
        }
        if (at + 8 + size > bytes.length) return -1;
        if (id === "fmt ") {
          this.channels = view.getUint16(at + 10, true);
          this.rate = view.getUint32(at + 12, true);
          this.bits = view.getUint16(at + 22, true);
          if (this.bits !== 16) throw new Error(`unsupported WAV: ${this.bits}-bit`);
        }
        at += 8 + size + (size % 2);
      }
      return -1;
    }
  }

  // --- generating and playing -------------------------------------------------------------

  async function generate() {
    stop();
    clearError();
    const text = $("text").value.trim();
    if (!text) return showError("tts.err.empty");
    Object.assign(results, { firstPacketMs: null, totalMs: null, audioSeconds: null, bytes: 0, playing: false, done: false });
    run.chunks = [];
    setTimers();
    drawWave();
    $("download").disabled = true;
    $("stop").disabled = false;
    $("generate").disabled = true;

    run.abort = new AbortController();
    run.audio = new AudioContext();
    run.nextTime = 0;
    const started = performance.now();
    run.ticker = setInterval(() => ($("total").textContent = formatSeconds((performance.now() - started) / 1000)), 100);
    try {
      const response = await Cosy.api("v1/audio/speech", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          model: "tts-1",
          input: text,
          voice: $("voice").value || undefined,
          speed: Number($("speed").value),
          response_format: "wav",
        }),
        signal: run.abort.signal,
      });
      if (!response.ok) throw new RequestError(await Cosy.errorText(response));
      const reader = response.body.getReader();
      const wav = new WavStream();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (results.firstPacketMs === null) {
          results.firstPacketMs = Math.round(performance.now() - started);
          $("first-packet").textContent = `${results.firstPacketMs} ms`;
        }
        results.bytes += value.length;
        const samples = wav.push(value);
        run.rate = wav.rate;
        if (samples.length) {
          run.chunks.push(samples);
          schedule(samples, wav.rate);
          drawWave();
        }
      }
      results.totalMs = Math.round(performance.now() - started);
      results.audioSeconds = sampleCount() / run.rate;
      results.done = true;
      $("download").disabled = !sampleCount();
    } catch (error) {
      if (error.name === "AbortError") return;
      if (error instanceof RequestError) showError("tts.err.request", error.message);
      else if (error instanceof TypeError) showError("err.unreachable");
      else showError("tts.err.request", error.message || String(error));
    } finally {
      clearInterval(run.ticker);
      setTimers();
      $("generate").disabled = false;
    }
  }

  class RequestError extends Error {}

  function schedule(samples, rate) {
    const ctx = run.audio;
    if (!ctx) return;
    const buffer = ctx.createBuffer(1, samples.length, rate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    const when = Math.max(ctx.currentTime + 0.03, run.nextTime);
    source.start(when);
    run.nextTime = when + buffer.duration;
    run.sources.push(source);
    results.playing = true;
    source.onended = () => {
      run.sources = run.sources.filter((s) => s !== source);
      if (!run.sources.length && results.done) $("stop").disabled = true;
    };
  }

  function stop() {
    if (run.abort) run.abort.abort();
    run.abort = null;
    for (const source of run.sources) {
      try {
        source.stop();
      } catch {
        /* not started yet */
      }
    }
    run.sources = [];
    if (run.audio) run.audio.close().catch(() => {});
    run.audio = null;
    clearInterval(run.ticker);
    $("stop").disabled = true;
    $("generate").disabled = false;
  }

  // --- results ---------------------------------------------------------------------------

  function sampleCount() {
    return run.chunks.reduce((n, c) => n + c.length, 0);
  }

  function setTimers() {
    $("first-packet").textContent = results.firstPacketMs === null ? "–" : `${results.firstPacketMs} ms`;
    $("total").textContent = results.totalMs === null ? "–" : formatSeconds(results.totalMs / 1000);
    $("duration").textContent = results.audioSeconds === null ? "–" : formatSeconds(results.audioSeconds);
  }

  function formatSeconds(s) {
    return `${s.toFixed(2)} s`;
  }

  function wavFile() {
    const count = sampleCount();
    const buffer = new ArrayBuffer(44 + count * 2);
    const view = new DataView(buffer);
    const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
    text(0, "RIFF");
    view.setUint32(4, 36 + count * 2, true);
    text(8, "WAVE");
    text(12, "fmt ");
    view.setUint32(16, 16, true);
    view.setUint16(20, 1, true); // PCM
    view.setUint16(22, 1, true); // mono
    view.setUint32(24, run.rate, true);
    view.setUint32(28, run.rate * 2, true);
    view.setUint16(32, 2, true);
    view.setUint16(34, 16, true);
    text(36, "data");
    view.setUint32(40, count * 2, true);
    let at = 44;
    for (const chunk of run.chunks) {
      new Int16Array(buffer, at, chunk.length).set(chunk);
      at += chunk.length * 2;
    }
    return new Blob([buffer], { type: "audio/wav" });
  }

  function download() {
    const url = URL.createObjectURL(wavFile());
    const link = document.createElement("a");
    link.href = url;
    link.download = "speech.wav";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function drawWave() {
    const canvas = $("wave");
    const g = canvas.getContext("2d");
    const style = getComputedStyle(document.documentElement);
    g.clearRect(0, 0, canvas.width, canvas.height);
    const mid = canvas.height / 2;
    g.fillStyle = style.getPropertyValue("--border");
    g.fillRect(0, mid - 1, canvas.width, 2);
    const total = sampleCount();
    if (!total) return;
    // Fills the width as the audio arrives; at least 8 s wide so short clips keep their shape.
    const span = Math.max(total, run.rate * 8);
    const perPixel = span / canvas.width;
    g.fillStyle = style.getPropertyValue("--accent");
    let pixel = 0;
    let lo = 0;
    let hi = 0;
    let seen = 0;
    for (const chunk of run.chunks) {
      for (let i = 0; i < chunk.length; i++) {
        const v = chunk[i] / 32768;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        if (++seen >= (pixel + 1) * perPixel) {
          g.fillRect(pixel, mid - hi * mid * 0.95, 1, Math.max(2, (hi - lo) * mid * 0.95));
          pixel += 1;
          lo = hi = 0;
        }
      }
    }
  }

  function showError(key, ...args) {
    run.error = [key, ...args];
    $("error-text").textContent = t(key, ...args);
    $("error").hidden = false;
  }

  function clearError() {
    run.error = null;
    $("error").hidden = true;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const text = $("text");
    text.value = t("tts.sample");
    $("speed").addEventListener("input", () => ($("speed-value").textContent = `${Number($("speed").value).toFixed(2)}×`));
    $("generate").addEventListener("click", generate);
    $("stop").addEventListener("click", stop);
    $("download").addEventListener("click", download);
    Cosy.onLanguage(() => {
      if (run.error) $("error-text").textContent = t(...run.error);
      drawWave();
    });
    document.addEventListener("cosy:theme", drawWave);
    Cosy.loadVoices($("voice")).catch(() => showError("err.unreachable"));
  });

  window.cosyTts = { results, wavFile };
})();
