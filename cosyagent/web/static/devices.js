// Microphone and speaker pickers (enumerateDevices; setSinkId where the browser has it) and
// the mute button. The choices are remembered in this browser.
"use strict";

(function () {
  const { t } = Cosy;
  const $ = (id) => document.getElementById(id);
  const canChooseSpeaker = "setSinkId" in HTMLMediaElement.prototype;
  const state = { muted: false, stream: null };

  function option(value, text, key) {
    const el = document.createElement("option");
    el.value = value;
    el.textContent = text;
    if (key) el.dataset.i18n = key;
    return el;
  }

  // Before the microphone is allowed, browsers hide device names (and often the devices).
  function fill(select, devices, key) {
    const wanted = select.value || Cosy.stored(key, "");
    const named = devices
      .filter((device) => device.deviceId && device.deviceId !== "default")
      .map((device, i) => option(device.deviceId, device.label || `${t(key)} ${i + 1}`));
    select.replaceChildren(option("", t("device.default"), "device.default"), ...named);
    if ([...select.options].some((o) => o.value === wanted)) select.value = wanted;
  }

  async function refresh() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices();
    fill($("mic"), devices.filter((d) => d.kind === "audioinput"), "mic");
    fill($("speaker"), devices.filter((d) => d.kind === "audiooutput"), "speaker");
  }

  function audioConstraints() {
    const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if ($("mic").value) audio.deviceId = { exact: $("mic").value };
    return audio;
  }

  function applySpeaker() {
    if (!canChooseSpeaker) return;
    $("remote-audio")
      .setSinkId($("speaker").value)
      .catch((error) => console.warn("speaker not available", error));
  }

  // --- mute -----------------------------------------------------------------------------

  function setMuted(muted) {
    state.muted = muted;
    if (state.stream) for (const track of state.stream.getAudioTracks()) track.enabled = !muted;
    const button = $("mute");
    button.setAttribute("aria-pressed", String(muted));
    button.classList.toggle("muted", muted);
    $("mute-label").dataset.i18n = muted ? "unmute" : "mute";
    $("mute-label").textContent = t(muted ? "unmute" : "mute");
  }

  // The call's microphone stream (null when the call ends: the button rests, unmuted).
  function attach(stream) {
    state.stream = stream;
    $("mute").disabled = !stream;
    setMuted(stream ? state.muted : false);
  }

  // onMicChange(): the call switches its microphone; the speaker applies at once.
  function bind(onMicChange) {
    $("mute").addEventListener("click", () => setMuted(!state.muted));
    $("mic").addEventListener("change", () => {
      Cosy.store("mic", $("mic").value);
      onMicChange();
    });
    $("speaker").disabled = !canChooseSpeaker;
    $("speaker-unsupported").hidden = canChooseSpeaker;
    $("speaker").addEventListener("change", () => {
      Cosy.store("speaker", $("speaker").value);
      applySpeaker();
    });
    if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
      navigator.mediaDevices.addEventListener("devicechange", () => refresh().catch(() => {}));
    }
    refresh()
      .then(applySpeaker)
      .catch((error) => console.warn("devices not listed", error));
  }

  window.CosyChat = window.CosyChat || {};
  window.CosyChat.devices = {
    bind,
    refresh,
    attach,
    audioConstraints,
    get muted() {
      return state.muted;
    },
  };
})();
