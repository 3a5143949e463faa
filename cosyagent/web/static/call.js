// The voice chat page: the OpenAI Realtime WebRTC flow against this server.
// POST the SDP offer to v1/realtime/calls, audio both ways on the peer connection,
// events as JSON on the "oai-events" data channel (session.update is sent over it).
"use strict";

(function () {
  const { t } = Cosy;
  const $ = (id) => document.getElementById(id);
  const VOICE_RMS = 0.02; // microphone level counted as speech, for the latency clock
  const AGENT_RMS = 0.01; // agent level counted as audible
  const LIVE = ["connecting", "listening", "user-speaking", "thinking", "agent-speaking"];

  const call = {
    phase: "idle",
    pc: null,
    dc: null,
    stream: null,
    callId: null,
    audio: null, // AudioContext
    micAnalyser: null,
    agentAnalyser: null,
    meterTimer: null,
    silenceMs: 500,
    lastVoiceAt: 0,
    speechEnd: null, // when the user's last turn ended (performance.now())
    users: new Map(), // item_id -> bubble
    responses: new Map(), // response_id -> {bubble, text, speechEnd, startedAt, heardAt}
    error: null, // [key, ...args]
  };
  // What the page measured and saw: read by tests and handy in the console (window.cosyagent).
  const results = { latencies: [], agentPeak: 0, micPeak: 0, events: 0, log: [] };

  // --- phases, errors ---------------------------------------------------------------

  function setPhase(phase) {
    call.phase = phase;
    $("status").dataset.state = phase;
    const label = $("status-text");
    label.dataset.i18n = "state." + phase;
    label.textContent = t("state." + phase);
    const live = LIVE.includes(phase);
    const button = $("call-button");
    button.classList.toggle("primary", !live);
    button.classList.toggle("danger", live);
    $("call-label").dataset.i18n = live ? "call.stop" : "call.start";
    $("call-label").textContent = t(live ? "call.stop" : "call.start");
    document.body.dataset.callPhase = phase;
  }

  function showError(key, ...args) {
    call.error = [key, ...args];
    $("error-text").textContent = t(key, ...args);
    $("error").hidden = false;
    $("error").dataset.key = key;
  }

  function clearError() {
    call.error = null;
    $("error").hidden = true;
    delete $("error").dataset.key;
  }

  function fail(key, ...args) {
    teardown();
    showError(key, ...args);
    setPhase("error");
  }

  // --- starting and ending ------------------------------------------------------------

  async function startCall() {
    clearError();
    setPhase("connecting");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return fail("err.mic-insecure");
    try {
      call.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      const name = error && error.name;
      if (name === "NotAllowedError" || name === "SecurityError") return fail("err.mic-denied");
      if (name === "NotFoundError" || name === "OverconstrainedError") return fail("err.mic-missing");
      return fail("err.mic-other", (error && error.message) || String(error));
    }
    if (call.phase !== "connecting") return teardown(); // stopped meanwhile

    const pc = (call.pc = new RTCPeerConnection({ iceServers: [] }));
    pc.ontrack = (event) => {
      const remote = event.streams[0] || new MediaStream([event.track]);
      $("remote-audio").srcObject = remote;
      call.agentAnalyser = analyser(remote);
    };
    pc.onconnectionstatechange = () => {
      if (pc !== call.pc) return;
      if (pc.connectionState === "failed") fail("err.connection");
      if (pc.connectionState === "closed" && LIVE.includes(call.phase)) endCall();
    };
    for (const track of call.stream.getAudioTracks()) pc.addTrack(track, call.stream);
    const dc = (call.dc = pc.createDataChannel("oai-events"));
    dc.onopen = sendSessionUpdate;
    dc.onmessage = (message) => {
      try {
        onEvent(JSON.parse(message.data));
      } catch (error) {
        console.error("bad event", error, message.data);
      }
    };
    dc.onclose = () => {
      if (dc === call.dc && LIVE.includes(call.phase)) fail("err.connection");
    };
    call.micAnalyser = analyser(call.stream);
    startMeters();

    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 2000);
    let response;
    try {
      response = await Cosy.api("v1/realtime/calls", {
        method: "POST",
        body: pc.localDescription.sdp,
        headers: { "Content-Type": "application/sdp" },
      });
    } catch {
      return fail("err.unreachable");
    }
    if (!response.ok) {
      if (response.status === 503) return fail("err.call-limit");
      if (response.status === 401) return fail("err.auth");
      return fail("err.refused", await Cosy.errorText(response));
    }
    const location = response.headers.get("Location");
    call.callId = location ? location.split("/").pop() : null;
    const answer = await response.text();
    if (pc !== call.pc) return; // ended while waiting
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
  }

  function endCall() {
    if (call.callId) {
      Cosy.api(`v1/realtime/calls/${call.callId}/hangup`, { method: "POST" }).catch(() => {});
    }
    teardown();
    setPhase("ended");
  }

  function teardown() {
    const { pc, dc, stream } = call;
    call.pc = call.dc = call.stream = null;
    call.callId = null;
    if (dc) dc.close();
    if (pc) pc.close();
    if (stream) stream.getTracks().forEach((track) => track.stop());
    $("remote-audio").srcObject = null;
    call.micAnalyser = call.agentAnalyser = null;
    stopMeters();
  }

  function iceGathered(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => pc.iceGatheringState === "complete" && resolve();
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs);
    });
  }

  function send(event) {
    if (call.dc && call.dc.readyState === "open") call.dc.send(JSON.stringify(event));
  }

  function sendSessionUpdate() {
    const session = { type: "realtime", instructions: $("instructions").value };
    if ($("voice").value) session.audio = { output: { voice: $("voice").value } };
    send({ type: "session.update", session });
  }

  // --- server events ------------------------------------------------------------------

  function onEvent(event) {
    results.events += 1;
    const now = performance.now();
    const status = event.response ? event.response.status : undefined;
    results.log.push({ at: Math.round(now), type: event.type, status, timings: event.x_cosyagent_timings_ms });
    if (results.log.length > 400) results.log.shift();
    switch (event.type) {
      case "session.created":
      case "session.updated": {
        const detection = event.session.audio && event.session.audio.input.turn_detection;
        if (detection && detection.silence_duration_ms) call.silenceMs = detection.silence_duration_ms;
        if (call.phase === "connecting") setPhase("listening");
        break;
      }
      case "input_audio_buffer.speech_started":
        userBubble(event.item_id);
        setPhase("user-speaking");
        break;
      case "input_audio_buffer.speech_stopped": {
        // The end of speech as heard here; the server only knows it silence_duration_ms later.
        const serverGuess = now - call.silenceMs;
        const heard = call.lastVoiceAt;
        call.speechEnd = heard && heard > serverGuess - 1500 && heard <= now ? heard : serverGuess;
        setPhase("thinking");
        break;
      }
      case "conversation.item.input_audio_transcription.delta": {
        const item = call.users.get(event.item_id);
        if (item) {
          const text = item.querySelector(".bubble");
          text.textContent = (item.classList.contains("pending") ? "" : text.textContent) + event.delta;
          item.classList.remove("pending");
        }
        break;
      }
      case "conversation.item.input_audio_transcription.completed":
        finishUserBubble(event.item_id, event.transcript);
        break;
      case "conversation.item.input_audio_transcription.failed":
        finishUserBubble(event.item_id, null);
        break;
      case "response.created":
        call.responses.set(event.response.id, {
          bubble: agentBubble(),
          text: "",
          speechEnd: call.speechEnd,
          startedAt: null,
          heardAt: null,
        });
        call.speechEnd = null;
        break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        appendAgentText(event.response_id, event.delta);
        break;
      case "output_audio_buffer.started": {
        const response = call.responses.get(event.response_id);
        if (response) response.startedAt = now;
        setPhase("agent-speaking");
        break;
      }
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        if (call.phase === "agent-speaking") setPhase("listening");
        break;
      case "response.done":
        finishResponse(event.response);
        break;
      case "error":
        showError("err.server-event", event.error.message);
        break;
    }
  }

  // --- transcript ---------------------------------------------------------------------

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
    const list = $("transcript");
    list.append(item);
    list.scrollTop = list.scrollHeight;
    return item;
  }

  function userBubble(itemId) {
    if (!call.users.has(itemId)) call.users.set(itemId, bubble("user"));
  }

  function finishUserBubble(itemId, transcript) {
    const item = call.users.get(itemId) || bubble("user");
    call.users.set(itemId, item);
    if (transcript !== null && !transcript.trim()) {
      item.remove(); // a cough or a click: nothing was said
      if (call.phase === "thinking") setPhase("listening");
      return;
    }
    item.classList.remove("pending");
    const text = item.querySelector(".bubble");
    if (transcript === null) {
      text.dataset.i18n = "turn.unheard";
      text.textContent = t("turn.unheard");
    } else {
      text.textContent = transcript;
    }
    $("turn-count").textContent = String(document.querySelectorAll(".turn.user:not(.pending)").length);
  }

  function agentBubble() {
    return bubble("agent");
  }

  function appendAgentText(responseId, delta) {
    const response = call.responses.get(responseId);
    if (!response) return;
    response.text += delta;
    response.bubble.classList.remove("pending");
    response.bubble.querySelector(".bubble").textContent = response.text;
    const list = $("transcript");
    list.scrollTop = list.scrollHeight;
  }

  const CLOCK =
    '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.4" stroke-linecap="round" aria-hidden="true">' +
    '<circle cx="12" cy="13" r="8"/><path d="M12 9v4l2.5 2.5M9 2h6"/></svg>';

  function tag(item, key, kind, text) {
    const el = document.createElement("span");
    el.className = `tag ${kind}`;
    const label = document.createElement("span");
    if (key) label.dataset.i18n = key;
    label.textContent = key ? t(key) : text;
    if (kind === "latency") el.innerHTML = CLOCK;
    el.append(label);
    item.querySelector(".meta").append(el);
  }

  function finishResponse(body) {
    const response = call.responses.get(body.id);
    if (!response) return;
    if (!response.text) {
      if (body.status === "cancelled") response.bubble.remove();
      else response.bubble.querySelector(".bubble").textContent = "";
    }
    if (body.status === "cancelled") tag(response.bubble, "turn.interrupted", "interrupted");
    if (body.status === "failed") tag(response.bubble, "turn.failed", "failed");
    response.bubble.classList.remove("pending");
    if (call.phase === "thinking") setPhase("listening");
  }

  // --- levels and latency ---------------------------------------------------------------

  function analyser(stream) {
    if (!call.audio) call.audio = new AudioContext();
    if (call.audio.state === "suspended") call.audio.resume().catch(() => {});
    const node = call.audio.createAnalyser();
    node.fftSize = 1024;
    call.audio.createMediaStreamSource(stream).connect(node);
    return node;
  }

  function rms(node) {
    if (!node) return 0;
    const samples = new Float32Array(node.fftSize);
    node.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const x of samples) sum += x * x;
    return Math.sqrt(sum / samples.length);
  }

  function meterWidth(level) {
    const db = 20 * Math.log10(Math.max(level, 1e-6));
    return `${Math.round(Math.min(1, Math.max(0, (db + 60) / 60)) * 100)}%`;
  }

  function startMeters() {
    stopMeters();
    call.meterTimer = setInterval(() => {
      const now = performance.now();
      const mic = rms(call.micAnalyser);
      const agent = rms(call.agentAnalyser);
      $("mic-level").style.width = meterWidth(mic);
      $("agent-level").style.width = meterWidth(agent);
      results.micPeak = Math.max(results.micPeak, mic);
      results.agentPeak = Math.max(results.agentPeak, agent);
      if (mic > VOICE_RMS) call.lastVoiceAt = now;
      for (const [, response] of call.responses) {
        if (response.heardAt !== null || response.speechEnd === null || response.startedAt === null) continue;
        // Heard at the client; if the level never shows it (audio output blocked), trust the event.
        if (agent > AGENT_RMS) heard(response, now);
        else if (now - response.startedAt > 1500) heard(response, response.startedAt);
      }
    }, 40);
  }

  function stopMeters() {
    clearInterval(call.meterTimer);
    call.meterTimer = null;
    $("mic-level").style.width = "0%";
    $("agent-level").style.width = "0%";
  }

  function heard(response, at) {
    response.heardAt = at;
    const ms = Math.max(0, Math.round(at - response.speechEnd));
    results.latencies.push(ms);
    tag(response.bubble, null, "latency", formatMs(ms));
    $("latency-last").textContent = formatMs(ms);
    const sorted = [...results.latencies].sort((a, b) => a - b);
    $("latency-median").textContent = formatMs(sorted[Math.floor((sorted.length - 1) / 2)]);
  }

  function formatMs(ms) {
    return ms < 10000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  async function inboundAudioBytes() {
    if (!call.pc) return 0;
    let bytes = 0;
    (await call.pc.getStats()).forEach((report) => {
      if (report.type === "inbound-rtp" && report.kind === "audio") bytes += report.bytesReceived || 0;
    });
    return bytes;
  }

  // --- page -----------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    setPhase("idle");
    $("call-button").addEventListener("click", () => {
      if (LIVE.includes(call.phase)) endCall();
      else startCall().catch((error) => fail("err.refused", (error && error.message) || String(error)));
    });
    $("voice").addEventListener("change", sendSessionUpdate);
    $("instructions").addEventListener("change", sendSessionUpdate);
    Cosy.onLanguage(() => {
      if (call.error) $("error-text").textContent = t(...call.error);
    });
    Cosy.loadVoices($("voice")).catch(() => showError("err.unreachable"));
  });

  window.addEventListener("pagehide", () => LIVE.includes(call.phase) && endCall());
  window.cosyagent = { call, results, inboundAudioBytes };
})();
