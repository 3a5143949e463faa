// The conversation as the server's events tell it: user turns, replies and their outcomes,
// the facts the status pill is derived from, the exchange count and each reply's timings.
"use strict";

(function () {
  const { transcript: view } = window.CosyChat;
  const $ = (id) => document.getElementById(id);
  const AGENT_RMS = 0.01; // agent level counted as audible
  const HEARD_FALLBACK_MS = 1500; // audio output blocked: trust output_audio_buffer.started
  const HEARD_OUTCOMES = new Set(["completed", "interrupted", "cut", "filtered"]); // what Exchanges counts (outcomeOf)

  // What the page measured and saw: read by tests and handy in the console (window.cosyagent).
  const results = { latencies: [], agentPeak: 0, micPeak: 0, events: 0, log: [], phases: [], exchanges: 0 };
  const state = {
    silenceMs: 500,
    lastVoiceAt: 0, // when the microphone last carried speech (performance.now())
    users: new Map(), // item_id -> bubble
    replies: new Map(), // response_id -> reply (see onResponseCreated)
    ...freshTurnState(),
  };

  function freshTurnState() {
    return {
      userSpeaking: false,
      awaiting: false, // a reply is due: from a user turn's end (or a typed message) until its audio starts
      heardWords: false, // a user turn had words since the last reply began
      requested: 0, // response.create sent, response.created not yet seen
      transcribing: new Set(), // ended user turns whose words are not known yet
      audible: new Set(), // replies whose audio is playing
      active: null, // the reply in progress (response id)
      turn: null, // clocks of the latest user turn: {speechEnd, stoppedAt, transcribedAt}
      clocks: new Map(), // item_id -> that turn's clocks
    };
  }

  // listening / user-speaking / thinking / agent-speaking, from the facts above.
  function livePhase() {
    if (state.userSpeaking) return "user-speaking";
    if (state.audible.size) return "agent-speaking";
    if (state.awaiting) return "thinking";
    return "listening";
  }

  // The call ended: replies cut by the hang-up keep what they said; bubbles still "…" go.
  function end() {
    for (const reply of state.replies.values()) {
      if (reply.done || !reply.text) continue;
      reply.done = true;
      view.finishReply(reply.bubble, reply.startedAt !== null ? "interrupted" : "unspoken", reply.text);
    }
    view.clearPending();
    Object.assign(state, freshTurnState());
  }

  // A typed message was sent (with its response.create).
  function typed(text) {
    view.typedTurn(text);
    state.requested += 1;
    state.awaiting = true;
    state.turn = null;
  }

  // --- server events ------------------------------------------------------------------

  function onEvent(event) {
    results.events += 1;
    const now = performance.now();
    const response = event.response || {};
    results.log.push({
      at: Math.round(now),
      type: event.type,
      status: response.status,
      status_details: response.status_details,
      response_id: event.response_id || response.id,
      item_id: event.item_id,
      timings: event.x_cosyagent_timings_ms,
      turn_detection: event.session && event.session.audio ? event.session.audio.input.turn_detection : undefined,
      max_output_tokens: event.session ? event.session.max_output_tokens : undefined,
    });
    if (results.log.length > 400) results.log.shift();
    const handler = handlers[event.type];
    if (handler) handler(event, now);
  }

  const handlers = {
    "session.created": onSession,
    "session.updated": onSession,
    "input_audio_buffer.speech_started": onSpeechStarted,
    "input_audio_buffer.speech_stopped": onSpeechStopped,
    "conversation.item.input_audio_transcription.delta": (event) => {
      const item = state.users.get(event.item_id);
      if (item) view.appendUserText(item, event.delta);
    },
    "conversation.item.input_audio_transcription.completed": (event, now) =>
      onTranscript(event.item_id, event.transcript, now),
    "conversation.item.input_audio_transcription.failed": (event, now) =>
      onTranscript(event.item_id, null, now, event.error && event.error.code),
    "response.created": onResponseCreated,
    "response.output_audio_transcript.delta": onReplyDelta,
    "response.output_text.delta": onReplyDelta,
    "output_audio_buffer.started": onAudioStarted,
    "output_audio_buffer.stopped": (event) => state.audible.delete(event.response_id),
    "output_audio_buffer.cleared": (event) => state.audible.delete(event.response_id),
    "response.done": onResponseDone,
    error: () => {
      state.requested = 0; // a refused response.create is the usual cause; no reply comes of it
      if (!state.active && !state.transcribing.size) state.awaiting = false;
    },
  };

  function onSession(event) {
    const detection = event.session.audio && event.session.audio.input.turn_detection;
    if (detection && detection.silence_duration_ms) state.silenceMs = detection.silence_duration_ms;
    window.CosyChat.session.reflect(event.session);
  }

  function onSpeechStarted(event) {
    state.userSpeaking = true;
    if (!state.users.has(event.item_id)) state.users.set(event.item_id, view.userTurn());
  }

  function onSpeechStopped(event, now) {
    state.userSpeaking = false;
    // The end of speech as heard here; the server may only know it silence_duration_ms later.
    const serverGuess = now - state.silenceMs;
    const heardAt = state.lastVoiceAt;
    const speechEnd = heardAt && heardAt > serverGuess - 1500 && heardAt <= now ? heardAt : serverGuess;
    state.turn = { speechEnd, stoppedAt: now, transcribedAt: null };
    state.clocks.set(event.item_id, state.turn);
    state.transcribing.add(event.item_id);
    // A turn that ends while a reply carries on (too short to interrupt it) gets no reply of its own.
    if (!state.active) state.awaiting = true;
  }

  function onTranscript(itemId, words, now, failure) {
    const item = state.users.get(itemId) || view.userTurn();
    state.users.set(itemId, item);
    view.finishUserTurn(item, words, failure);
    state.transcribing.delete(itemId);
    const clock = state.clocks.get(itemId);
    if (clock) clock.transcribedAt = now;
    if (words && words.trim()) state.heardWords = true;
    // No words to answer (a failed recognition, or only empty fragments): no reply comes.
    const nothingToAnswer = words === null || (!state.transcribing.size && !state.heardWords);
    if (nothingToAnswer && !state.active && !state.requested) state.awaiting = false;
  }

  // --- replies ------------------------------------------------------------------------

  function onResponseCreated(event, now) {
    const reply = {
      bubble: view.replyTurn(),
      text: "",
      turn: state.turn, // null for a typed message
      createdAt: now,
      startedAt: null,
      heardAt: null,
      server: {},
      done: false,
    };
    state.replies.set(event.response.id, reply);
    state.active = event.response.id;
    state.awaiting = true;
    state.heardWords = false;
    state.requested = Math.max(0, state.requested - 1);
    state.turn = null;
    view.showTimings(reply.bubble, stageTimings(reply));
  }

  function onReplyDelta(event) {
    const reply = state.replies.get(event.response_id);
    if (!reply || reply.done) return;
    reply.text += event.delta;
    view.appendReplyText(reply.bubble, reply.text);
  }

  function onAudioStarted(event, now) {
    state.audible.add(event.response_id);
    state.awaiting = false;
    const reply = state.replies.get(event.response_id);
    if (reply && reply.startedAt === null) {
      reply.startedAt = now;
      view.showTimings(reply.bubble, stageTimings(reply));
    }
  }

  function onResponseDone(event) {
    const body = event.response;
    if (state.active === body.id) state.active = null;
    const reply = state.replies.get(body.id);
    if (!reply || reply.done) return;
    reply.done = true;
    if (reply.startedAt === null) state.awaiting = state.requested > 0;
    const outcome = outcomeOf(body, reply);
    view.finishReply(reply.bubble, outcome, keptText(body, reply, outcome));
    if (HEARD_OUTCOMES.has(outcome)) {
      results.exchanges += 1;
      $("turn-count").textContent = String(results.exchanges);
    }
    reply.server = event.x_cosyagent_timings_ms || {};
    view.showTimings(reply.bubble, stageTimings(reply));
  }

  // completed | interrupted (cut after it became audible) | unspoken (cut before) | failed |
  // cut (the LLM stopped at max_output_tokens) | filtered (stopped by its content filter)
  function outcomeOf(body, reply) {
    if (body.status === "failed") return "failed";
    if (body.status === "incomplete") {
      const reason = body.status_details && body.status_details.reason;
      return reason === "content_filter" ? "filtered" : "cut";
    }
    if (body.status !== "cancelled") return "completed";
    const audio = (body.output_modalities || ["audio"]).includes("audio");
    return (audio ? reply.startedAt !== null : reply.text !== "") ? "interrupted" : "unspoken";
  }

  // An interrupted reply keeps the words that were heard, as the server counts them.
  function keptText(body, reply, outcome) {
    const content = (body.output && body.output[0] && body.output[0].content) || [];
    const said = content.length && typeof content[0].transcript === "string" ? content[0].transcript : null;
    if (outcome === "interrupted" && said !== null) return said;
    return reply.text || said || "";
  }

  // Client clocks (end of turn, recognition, audio start, voice-to-voice) and the server's.
  function stageTimings(reply) {
    const stages = { ...reply.server };
    const turn = reply.turn;
    if (turn) {
      stages.end_of_turn = turn.stoppedAt - turn.speechEnd;
      if (turn.transcribedAt !== null) stages.asr = turn.transcribedAt - turn.stoppedAt;
    }
    if (reply.startedAt !== null) stages.first_audio = reply.startedAt - reply.createdAt;
    if (reply.heardAt !== null && turn) stages.voice_to_voice = reply.heardAt - turn.speechEnd;
    return stages;
  }

  // --- levels and the voice-to-voice clock ----------------------------------------------

  // Called by the meters, every few tens of milliseconds, with the current levels.
  function levels(now, mic, agent, voiceRms) {
    results.micPeak = Math.max(results.micPeak, mic);
    results.agentPeak = Math.max(results.agentPeak, agent);
    if (mic > voiceRms) state.lastVoiceAt = now;
    for (const reply of state.replies.values()) {
      if (reply.heardAt !== null || reply.turn === null || reply.startedAt === null) continue;
      if (agent > AGENT_RMS) heard(reply, now);
      else if (now - reply.startedAt > HEARD_FALLBACK_MS) heard(reply, reply.startedAt);
    }
  }

  function heard(reply, at) {
    reply.heardAt = at;
    const ms = Math.max(0, Math.round(at - reply.turn.speechEnd));
    results.latencies.push(ms);
    view.latencyTag(reply.bubble, view.formatMs(ms));
    view.showTimings(reply.bubble, stageTimings(reply));
    $("latency-last").textContent = view.formatMs(ms);
    const sorted = [...results.latencies].sort((a, b) => a - b);
    $("latency-median").textContent = view.formatMs(sorted[Math.floor((sorted.length - 1) / 2)]);
  }

  window.CosyChat.conversation = {
    onEvent,
    livePhase,
    typed,
    end,
    levels,
    results,
    get active() {
      return state.active;
    },
  };
})();
