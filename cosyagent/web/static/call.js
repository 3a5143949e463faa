// The voice chat page: the OpenAI Realtime WebRTC flow against this server.
// POST the SDP offer to v1/realtime/calls, audio both ways on the peer connection,
// events as JSON on the "oai-events" data channel (session.update is sent over it).
"use strict";

(function () {
  const { t, rms } = Cosy;
  const { conversation, eventLog, devices, session, quality } = window.CosyChat;
  const $ = (id) => document.getElementById(id);
  const VOICE_RMS = 0.02; // microphone level counted as speech, for the latency clock
  const LIVE = ["connecting", "listening", "user-speaking", "thinking", "agent-speaking"];
  const IN_CALL = LIVE.slice(1);

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
    error: null, // [key, ...args]
  };
  const results = conversation.results;

  // --- phases, errors ---------------------------------------------------------------

  function setPhase(phase) {
    if (phase !== call.phase) results.phases.push({ at: Math.round(performance.now()), phase });
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

  function updatePhase() {
    if (IN_CALL.includes(call.phase)) setPhase(conversation.livePhase());
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

  const messageOf = (error) => (error && error.message) || String(error);

  // --- starting and ending ------------------------------------------------------------

  async function openMicrophone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return fail("err.mic-insecure");
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: devices.audioConstraints() });
    } catch (error) {
      const name = error && error.name;
      if (name === "NotAllowedError" || name === "SecurityError") return fail("err.mic-denied");
      if (name === "NotFoundError" || name === "OverconstrainedError") return fail("err.mic-missing");
      return fail("err.mic-other", messageOf(error));
    }
  }

  async function startCall() {
    clearError();
    setPhase("connecting");
    const stream = await openMicrophone();
    if (!stream) return;
    call.stream = stream;
    if (call.phase !== "connecting") return teardown(); // stopped meanwhile
    devices.attach(stream);
    devices.refresh().catch((error) => console.warn("devices not listed", error)); // names are readable now
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
    for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
    openEvents(pc);
    call.micAnalyser = analyser(stream);
    startMeters();
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 2000);
    await connect(pc);
  }

  function openEvents(pc) {
    const dc = (call.dc = pc.createDataChannel("oai-events"));
    dc.onopen = () => {
      // With a client secret, the session is the one its backend set up: the page leaves it as it is.
      if (!Cosy.clientSecret()) sendSessionUpdate();
      $("say-text").disabled = $("say-send").disabled = false;
    };
    dc.onmessage = onMessage;
    dc.onclose = () => {
      if (dc === call.dc && LIVE.includes(call.phase)) fail("err.connection");
    };
  }

  async function connect(pc) {
    let response;
    try {
      response = await Cosy.api(
        "v1/realtime/calls",
        { method: "POST", body: pc.localDescription.sdp, headers: { "Content-Type": "application/sdp" } },
        true,
      );
    } catch {
      return fail("err.unreachable");
    }
    if (!response.ok) {
      if (response.status === 503) return fail("err.call-limit");
      if (response.status === 401) return fail("err.auth", await Cosy.errorText(response));
      return fail("err.refused", await Cosy.errorText(response));
    }
    const location = response.headers.get("Location");
    call.callId = location ? location.split("/").pop() : null;
    const answer = await response.text();
    if (pc !== call.pc) return; // ended while waiting
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    quality.start(pc);
  }

  // A new microphone picked during the call: the same sender carries the new track.
  async function switchMicrophone() {
    if (!call.pc || !call.stream) return;
    const stream = await navigator.mediaDevices.getUserMedia({ audio: devices.audioConstraints() });
    const sender = call.pc && call.pc.getSenders().find((s) => s.track && s.track.kind === "audio");
    if (!sender) return stream.getTracks().forEach((track) => track.stop()); // the call ended meanwhile
    await sender.replaceTrack(stream.getAudioTracks()[0]);
    call.stream.getTracks().forEach((track) => track.stop());
    call.stream = stream;
    call.micAnalyser = analyser(stream);
    devices.attach(stream);
  }

  function endCall() {
    if (call.callId) {
      Cosy.api(`v1/realtime/calls/${call.callId}/hangup`, { method: "POST" }, true).catch(() => {});
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
    $("say-text").disabled = $("say-send").disabled = true;
    devices.attach(null);
    quality.stop();
    stopMeters();
    conversation.end();
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
    if (!call.dc || call.dc.readyState !== "open") return false;
    call.dc.send(JSON.stringify(event));
    eventLog.add("client", event);
    return true;
  }

  function sendSessionUpdate() {
    send({ type: "session.update", session: session.build() });
  }

  // A typed message: a user item, then a reply to it (cutting off the one under way, if any).
  function sendText(text) {
    if (conversation.active) send({ type: "response.cancel", response_id: conversation.active });
    const item = { type: "message", role: "user", content: [{ type: "input_text", text }] };
    if (!send({ type: "conversation.item.create", item })) return;
    send({ type: "response.create" });
    conversation.typed(text);
    updatePhase();
  }

  function onMessage(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (error) {
      return console.error("bad event", error, message.data);
    }
    eventLog.add("server", event);
    conversation.onEvent(event);
    document.dispatchEvent(new CustomEvent("cosy:server-event", { detail: event })); // for the avatar
    if (event.type === "error") showError("err.server-event", event.error.message);
    if (call.phase === "connecting" && event.type.startsWith("session.")) setPhase(conversation.livePhase());
    updatePhase();
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

  function meterWidth(level) {
    const db = 20 * Math.log10(Math.max(level, 1e-6));
    return `${Math.round(Math.min(1, Math.max(0, (db + 60) / 60)) * 100)}%`;
  }

  function startMeters() {
    stopMeters();
    call.meterTimer = setInterval(() => {
      const mic = devices.muted ? 0 : rms(call.micAnalyser);
      const agent = rms(call.agentAnalyser);
      $("mic-level").style.width = meterWidth(mic);
      $("agent-level").style.width = meterWidth(agent);
      conversation.levels(performance.now(), mic, agent, VOICE_RMS);
    }, 40);
  }

  function stopMeters() {
    clearInterval(call.meterTimer);
    call.meterTimer = null;
    $("mic-level").style.width = "0%";
    $("agent-level").style.width = "0%";
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

  // An English-only recognizer turns Chinese speech into invented English: say so up front
  // to whoever reads the page in Chinese (GET /v1/health names what the ASR transcribes).
  const asr = { model: "", languages: null };

  async function loadAsrLanguages() {
    try {
      const response = await Cosy.api("v1/health");
      if (!response.ok) return;
      const engine = ((await response.json()).engines || {}).asr || {};
      asr.model = engine.model || "";
      asr.languages = engine.languages || null;
    } catch {
      return; /* the voices' loading reports an unreachable server */
    }
    showAsrLanguageNote();
  }

  function showAsrLanguageNote() {
    const note = $("asr-language-note");
    note.hidden = !(Cosy.lang === "zh" && asr.languages && !asr.languages.includes("zh"));
    note.textContent = t("asr.english-only", asr.model);
  }

  document.addEventListener("DOMContentLoaded", () => {
    setPhase("idle");
    $("call-button").addEventListener("click", () => {
      if (LIVE.includes(call.phase)) endCall();
      else startCall().catch((error) => fail("err.refused", messageOf(error)));
    });
    $("say").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("say-text").value.trim();
      if (!text) return;
      sendText(text);
      $("say-text").value = "";
    });
    session.bind(sendSessionUpdate);
    devices.bind(() => switchMicrophone().catch((error) => showError("err.mic-other", messageOf(error))));
    Cosy.onLanguage(() => {
      if (call.error) $("error-text").textContent = t(...call.error);
      showAsrLanguageNote();
    });
    // With only a client secret the voice list is closed to the page: the secret's session has its voice.
    Cosy.loadVoices($("voice")).catch(() => Cosy.clientSecret() || showError("err.unreachable"));
    loadAsrLanguages();
  });

  window.addEventListener("pagehide", () => LIVE.includes(call.phase) && endCall());
  window.cosyagent = { call, results, inboundAudioBytes, quality };
})();
