// Shared by both pages: theme, language, the API helper and the voice list.
"use strict";

(function () {
  const STORE = "cosyagent.";
  const strings = window.COSY_STRINGS;

  function stored(key, fallback) {
    try {
      return localStorage.getItem(STORE + key) ?? fallback;
    } catch {
      return fallback;
    }
  }

  function store(key, value) {
    try {
      localStorage.setItem(STORE + key, value);
    } catch {
      /* private mode: the setting lasts for this page only */
    }
  }

  const prefersDark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  let theme = stored("theme", prefersDark ? "dark" : "light");
  let lang = stored("lang", (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");
  const listeners = [];

  function t(key, ...args) {
    const text = (strings[lang] && strings[lang][key]) ?? strings.en[key] ?? key;
    return text.replace(/\{(\d+)\}/g, (_, i) => String(args[Number(i)] ?? ""));
  }

  function has(key) {
    return key in strings.en;
  }

  function applyTheme() {
    document.documentElement.dataset.theme = theme;
  }

  function applyLanguage() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
    for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
    const title = document.body.dataset.titleKey;
    if (title) document.title = t(title);
    for (const listener of listeners) listener(lang);
  }

  function setTheme(value) {
    theme = value;
    store("theme", theme);
    applyTheme();
    document.dispatchEvent(new Event("cosy:theme"));
  }

  function setLanguage(value) {
    lang = value;
    store("lang", lang);
    applyLanguage();
  }

  // Resolve relative to the page, so the client also works behind a path prefix.
  function apiUrl(path) {
    return new URL(path.replace(/^\//, ""), document.baseURI).toString();
  }

  // A client secret (ek_...) from the page's own backend: it opens calls on a server with API
  // keys, so no key is ever in the page. It arrives in the address's fragment
  // (/#client_secret=ek_..., which is never sent to any server) or is pasted in Settings; it is
  // kept for this tab only (sessionStorage) and the fragment is wiped from the address bar.
  const SECRET_KEY = STORE + "clientSecret";
  const SECRET_SHAPE = /^ek_[A-Za-z0-9_-]{32,64}$/;

  function takeSecretFromAddress() {
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    const secret = fragment.get("client_secret");
    if (secret === null) return;
    history.replaceState(null, "", location.pathname + location.search);
    if (SECRET_SHAPE.test(secret)) setClientSecret(secret);
  }

  function clientSecret() {
    try {
      return sessionStorage.getItem(SECRET_KEY) || "";
    } catch {
      return memorySecret;
    }
  }

  let memorySecret = "";
  function setClientSecret(secret) {
    memorySecret = secret;
    try {
      if (secret) sessionStorage.setItem(SECRET_KEY, secret);
      else sessionStorage.removeItem(SECRET_KEY);
    } catch {
      /* private mode: kept in memory */
    }
  }

  // session: the request opens or ends a call, where a client secret is accepted (and preferred);
  // elsewhere (voices, health) only an API key typed into this browser is sent.
  function apiHeaders(extra, session = false) {
    const headers = new Headers(extra || {});
    const key = stored("apiKey", "");
    const secret = session ? clientSecret() : "";
    if (secret || key) headers.set("Authorization", "Bearer " + (secret || key));
    return headers;
  }

  async function api(path, options = {}, session = false) {
    return fetch(apiUrl(path), { ...options, headers: apiHeaders(options.headers, session) });
  }

  // The message of an OpenAI-style error body, else the status line.
  async function errorText(response) {
    try {
      const body = await response.clone().json();
      if (body && body.error && body.error.message) return body.error.message;
      if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch {
      /* not JSON */
    }
    return `${response.status} ${response.statusText}`.trim();
  }

  // Voices: GET /v1/voices (usable ones), else the TTS engine's list in GET /v1/health.
  async function loadVoices(select, preferred) {
    let voices = [];
    try {
      const response = await api("v1/voices");
      if (response.ok) {
        const body = await response.json();
        voices = (body.data || []).filter((v) => v.usable !== false).map((v) => ({ id: v.id, name: v.name || v.id }));
      }
    } catch {
      /* fall back to health */
    }
    if (!voices.length) {
      const response = await api("v1/health");
      if (!response.ok) throw new Error(await errorText(response));
      const health = await response.json();
      voices = ((health.engines && health.engines.tts && health.engines.tts.voices) || []).map((id) => ({ id, name: id }));
    }
    select.replaceChildren(
      ...voices.map((v) => {
        const option = document.createElement("option");
        option.value = v.id;
        option.textContent = v.name === v.id ? v.id : `${v.name} (${v.id})`;
        return option;
      }),
    );
    const wanted = preferred || stored("voice", "");
    if (voices.some((v) => v.id === wanted)) select.value = wanted;
    select.disabled = !voices.length;
    select.addEventListener("change", () => store("voice", select.value));
    return voices;
  }

  // The level (RMS) of what an AnalyserNode hears now; 0 without one.
  function rms(node) {
    if (!node) return 0;
    const samples = new Float32Array(node.fftSize);
    node.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const x of samples) sum += x * x;
    return Math.sqrt(sum / samples.length);
  }

  function bindChrome() {
    const themeButton = document.getElementById("theme-toggle");
    const langButton = document.getElementById("lang-toggle");
    if (themeButton) themeButton.addEventListener("click", () => setTheme(theme === "dark" ? "light" : "dark"));
    if (langButton) langButton.addEventListener("click", () => setLanguage(lang === "zh" ? "en" : "zh"));
    const keyInput = document.getElementById("api-key");
    if (keyInput) {
      keyInput.value = clientSecret() || stored("apiKey", "");
      keyInput.addEventListener("change", () => {
        const value = keyInput.value.trim();
        const secret = SECRET_SHAPE.test(value); // a client secret: this tab only, never localStorage
        setClientSecret(secret ? value : "");
        store("apiKey", secret ? "" : value);
      });
    }
    applyLanguage();
  }

  applyTheme();
  takeSecretFromAddress();
  document.addEventListener("DOMContentLoaded", bindChrome);

  window.Cosy = {
    t,
    has,
    api,
    apiUrl,
    apiHeaders,
    clientSecret,
    errorText,
    loadVoices,
    rms,
    stored,
    store,
    onLanguage: (listener) => listeners.push(listener),
    get lang() {
      return lang;
    },
    setTheme,
    setLanguage,
  };
})();
