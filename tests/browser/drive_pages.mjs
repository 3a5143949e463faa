// Drives Debian's Chromium (no browser download) through the voice chat page and the TTS
// playground; prints one JSON object with what it saw. Used by tests/browser/test_pages.py.
//
//   node tests/browser/drive_pages.mjs BASE_URL FAKE_MIC.wav QUESTION.wav ARTIFACTS_DIR
//
// FAKE_MIC.wav loops as Chromium's fake microphone; QUESTION.wav is said on cue by a scripted
// microphone (Web Audio), so that the user can speak again exactly while a reply is prepared.
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { conversation, layouts, measureLayout } from "./drive_conversation.mjs";

const [base, fakeMic, question, out] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const VIEWPORT = { width: 1280, height: 880 };
const SMALL_PHONE = { width: 360, height: 780 };
const result = {
  console: [],
  pageErrors: [],
  screenshots: [],
  chat: {},
  conversation: {},
  layout: {},
  errors: {},
  tts: {},
};
const log = (...args) => console.error(new Date().toISOString(), ...args);

function watch(page, name) {
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      result.console.push(`${name} ${message.type()}: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => result.pageErrors.push(`${name}: ${error.message}`));
  page.on("requestfailed", (request) => {
    if (!request.url().startsWith(base)) result.pageErrors.push(`${name}: outside request ${request.url()}`);
  });
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(base) && !url.startsWith("data:") && !url.startsWith("blob:")) {
      result.pageErrors.push(`${name}: request outside the server: ${url}`);
    }
  });
}

async function shot(page, name) {
  const file = path.join(out, name);
  await page.screenshot({ path: file, fullPage: false });
  result.screenshots.push(file);
}

async function voicesLoaded(page) {
  await page.waitForFunction(() => !document.querySelector("#voice").disabled, null, { timeout: 30000 });
  return page.$$eval("#voice option", (options) => options.map((o) => o.value));
}

async function voiceChat(browser) {
  const context = await browser.newContext({ viewport: VIEWPORT, colorScheme: "light", locale: "en-US" });
  const page = await context.newPage();
  watch(page, "chat");
  try {
    await talk(page);
  } finally {
    result.chat.log = await page.evaluate(() => window.cosyagent && window.cosyagent.results.log).catch(() => null);
    await shot(page, "voice-chat-last.png").catch(() => {});
    await context.close();
  }
}

async function talk(page) {
  await page.goto(base + "/");
  result.chat.voices = await voicesLoaded(page);
  await shot(page, "voice-chat-idle.png");
  await page.fill("#instructions", "You are a friendly voice assistant. Answer in one short sentence.");
  await page.click("#call-button");
  await page.waitForFunction(() => document.body.dataset.callPhase === "listening", null, { timeout: 30000 });
  log("call connected");
  await page.waitForSelector(".turn.user:not(.pending) .bubble", { timeout: 120000 });
  result.chat.userTranscript = await page.textContent(".turn.user:not(.pending) .bubble");
  log("user transcript:", result.chat.userTranscript);
  await page.waitForFunction(() => window.cosyagent.results.latencies.length > 0, null, { timeout: 120000 });
  log("agent audio heard");
  // Let the reply finish (the screenshot shows a whole turn); a slow machine may not get there.
  const replyDone = () =>
    window.cosyagent.results.log.some((e) => e.type === "output_audio_buffer.stopped" || e.type === "response.done");
  await page.waitForFunction(replyDone, null, { timeout: 30000 }).catch(() => log("reply still playing"));
  await page.waitForTimeout(800);
  result.chat.inboundAudioBytes = await page.evaluate(() => window.cosyagent.inboundAudioBytes());
  result.chat.agentPeak = await page.evaluate(() => window.cosyagent.results.agentPeak);
  result.chat.micPeak = await page.evaluate(() => window.cosyagent.results.micPeak);
  result.chat.latencies = await page.evaluate(() => window.cosyagent.results.latencies);
  result.chat.latencyText = await page.textContent("#latency-last");
  result.chat.agentText = await page.$$eval(".turn.agent .bubble", (texts) =>
    texts.map((text) => text.textContent).find((text) => text.trim()),
  );
  result.chat.phase = await page.evaluate(() => document.body.dataset.callPhase);
  await shot(page, "voice-chat-fake-mic.png");
  await page.click("#theme-toggle");
  await shot(page, "voice-chat-dark.png");
  await page.click("#lang-toggle");
  result.chat.chineseStatus = await page.textContent("#status-text");
  result.chat.chineseButton = await page.textContent("#call-label");
  await shot(page, "voice-chat-dark-zh.png");
  await page.click("#lang-toggle");
  await page.click("#call-button");
  await page.waitForFunction(() => document.body.dataset.callPhase === "ended", null, { timeout: 10000 });
  result.chat.endedPhase = "ended";
  await page.waitForTimeout(500); // the hangup request leaves
}

async function errorStates(browser) {
  const context = await browser.newContext({ viewport: VIEWPORT, colorScheme: "light", locale: "en-US" });
  const cases = {
    micDenied: async (page) => {
      await page.addInitScript(() => {
        navigator.mediaDevices.getUserMedia = async () => {
          throw new DOMException("Permission denied", "NotAllowedError");
        };
      });
    },
    unreachable: async (page) => page.route("**/v1/realtime/calls", (route) => route.abort("connectionrefused")),
    callLimit: async (page) =>
      page.route("**/v1/realtime/calls", (route) =>
        route.fulfill({
          status: 503,
          contentType: "application/json",
          body: JSON.stringify({ error: { message: "at the limit of 4 calls", type: "server_error", code: "call_limit" } }),
        }),
      ),
  };
  for (const [name, arrange] of Object.entries(cases)) {
    const page = await context.newPage();
    watch(page, name);
    await arrange(page);
    await page.goto(base + "/");
    await voicesLoaded(page);
    await page.click("#call-button");
    await page.waitForSelector("#error:not([hidden])", { timeout: 15000 });
    result.errors[name] = {
      key: await page.getAttribute("#error", "data-key"),
      text: await page.textContent("#error-text"),
      phase: await page.evaluate(() => document.body.dataset.callPhase),
    };
    if (name === "callLimit") await shot(page, "voice-chat-error.png");
    await page.close();
  }
  await context.close();
}

async function ttsPlayground(browser) {
  const context = await browser.newContext({ viewport: VIEWPORT, colorScheme: "light", locale: "en-US", acceptDownloads: true });
  const page = await context.newPage();
  watch(page, "tts");
  await page.goto(base + "/tts");
  result.tts.voices = await voicesLoaded(page);
  await page.fill("#text", "Hello from the playground. Playback starts with the first chunk, before the rest is ready.");
  await page.click("#generate");
  await page.waitForFunction(() => window.cosyTts.results.firstPacketMs !== null, null, { timeout: 60000 });
  result.tts.firstPacketText = await page.textContent("#first-packet");
  await page.waitForFunction(() => window.cosyTts.results.done, null, { timeout: 120000 });
  Object.assign(result.tts, await page.evaluate(() => ({ ...window.cosyTts.results })));
  result.tts.totalText = await page.textContent("#total");
  result.tts.durationText = await page.textContent("#duration");
  await shot(page, "tts.png");
  await page.setViewportSize(SMALL_PHONE);
  result.tts.phone = await measureLayout(page);
  await shot(page, "tts-phone.png");
  await page.setViewportSize(VIEWPORT);
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
  result.tts.download = path.join(out, "speech.wav");
  await download.saveAs(result.tts.download);
  result.tts.suggestedFilename = download.suggestedFilename();
  await page.click("#theme-toggle");
  await shot(page, "tts-dark.png");
  await context.close();
}

fs.mkdirSync(out, { recursive: true });
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${fakeMic}`,
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns,OptimizationHints,AutofillServerCommunication,MediaRouter",
    // Loopback only: Chromium still looks up Google's hosts (sign-in, autofill, updates) despite
    // the flags above; with every name resolved to "not found" locally, no DNS query leaves.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
  ],
});
try {
  const io = { base, question, result, log, watch, shot, voicesLoaded, viewport: VIEWPORT, widths: [1280, 390, 360] };
  const steps = [
    ["chat", voiceChat],
    ["conversation", (b) => conversation(b, io)],
    ["layout", (b) => layouts(b, io)],
    ["errors", errorStates],
    ["tts", ttsPlayground],
  ];
  for (const [name, step] of steps) {
    log("step", name);
    try {
      await step(browser);
    } catch (error) {
      result[name].failure = String(error && error.stack ? error.stack : error);
      log("step failed", name, error);
    }
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
