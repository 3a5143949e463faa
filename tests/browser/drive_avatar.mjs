// Drives Debian's Chromium through the avatar page: a call, a typed question, and the face while
// the agent answers. Every 20 ms the page records the mouth's viseme and the level of the agent's
// audio as it plays; prints one JSON object. Used by tests/browser/test_avatar.py.
//
//   node tests/browser/drive_avatar.mjs BASE_URL SILENT_MIC.wav ARTIFACTS_DIR [JITTER_TARGET_MS]
//
// JITTER_TARGET_MS: the agent's audio waits about this long in the receiver's jitter buffer
// (RTCRtpReceiver.jitterBufferTarget), as on a network farther away than loopback.
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const [base, fakeMic, out, jitterTargetMs] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const result = { pageErrors: [], console: [] };
const log = (...args) => console.error(new Date().toISOString(), ...args);

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
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 880 }, locale: "en-US" });
  const page = await context.newPage();
  page.on("pageerror", (error) => result.pageErrors.push(error.message));
  page.on("console", (m) => m.type() === "error" && result.console.push(m.text()));
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(base) && !url.startsWith("data:") && !url.startsWith("blob:")) {
      result.pageErrors.push(`request outside the server: ${url}`);
    }
  });
  await page.goto(base + "/avatar");
  await page.waitForFunction(() => !document.querySelector("#voice").disabled, null, { timeout: 30000 });
  result.title = await page.title();
  result.idleViseme = await page.getAttribute("#avatar-face", "data-viseme");
  await page.fill("#instructions", "You are a storyteller. Answer with two full sentences.");
  await page.click("#call-button");
  await page.waitForFunction(() => document.body.dataset.callPhase === "listening", null, { timeout: 60000 });
  log("call connected");
  if (jitterTargetMs) {
    result.jitterBufferTarget = await page.evaluate((ms) => {
      const receiver = window.cosyagent.call.pc.getReceivers().find((r) => r.track.kind === "audio");
      receiver.jitterBufferTarget = ms;
      return receiver.jitterBufferTarget;
    }, Number(jitterTargetMs));
  }
  // Sample the mouth and the agent's audio level as it plays.
  await page.evaluate(() => {
    window.avatarSamples = [];
    const level = () => window.Cosy.rms(window.cosyagent.call.agentAnalyser); // 0 without an analyser
    setInterval(() => {
      const viseme = document.querySelector("#avatar-face").dataset.viseme;
      window.avatarSamples.push({ at: Math.round(performance.now()), viseme, rms: level() });
    }, 20);
  });
  await page.fill("#say-text", "Tell me a short story about a fox who lives near a river.");
  await page.click("#say-send");
  const started = (type) =>
    page.waitForFunction((t) => window.cosyagent.results.log.some((e) => e.type === t), type, { timeout: 400000 });
  await started("output_audio_buffer.started");
  log("the agent talks");
  await page
    .waitForFunction(() => ["aa", "E", "oh", "ih"].includes(document.querySelector("#avatar-face").dataset.viseme), null, {
      timeout: 30000,
      polling: 5,
    })
    .then(() => page.evaluate(() => window.scrollTo(0, 0)))
    .then(() => page.screenshot({ path: path.join(out, "avatar.png") }))
    .catch((error) => result.pageErrors.push(`no open mouth to show: ${error.message}`));
  await started("output_audio_buffer.stopped");
  await page.waitForTimeout(800);
  log("the agent stopped");
  result.samples = await page.evaluate(() => window.avatarSamples);
  result.log = await page.evaluate(() =>
    window.cosyagent.results.log.map((e) => ({ type: e.type, at: e.at, response_id: e.response_id })),
  );
  result.timestampEvents = await page.evaluate(
    () => window.cosyagent.results.log.filter((e) => e.type === "response.output_audio_timestamps.delta").length,
  );
  result.changes = await page.evaluate(() => window.cosyAvatar.samples);
  result.resyncs = await page.evaluate(() => window.cosyAvatar.resyncs);
  result.playoutDelayMs = await page.evaluate(() => window.cosyagent.quality.last.playoutDelayMs);
  await page.click("#call-button");
  await context.close();
} catch (error) {
  result.failure = String(error && error.stack ? error.stack : error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
