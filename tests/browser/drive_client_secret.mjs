// Drives Debian's Chromium through the voice chat page against a server with API keys: first with
// no credential (the call is refused), then opened from a link carrying a client secret in its
// fragment, as the page's own backend would hand it out; prints one JSON object with what it saw.
// Used by tests/browser/test_client_secret.py.
//
//   node tests/browser/drive_client_secret.mjs BASE_URL CLIENT_SECRET SILENT_MIC.wav ARTIFACTS_DIR
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const [base, secret, fakeMic, out] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const result = { pageErrors: [], authorizations: [], refused: {}, withSecret: {} };
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

function watch(page, name) {
  page.on("pageerror", (error) => result.pageErrors.push(`${name}: ${error.message}`));
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(base) && !url.startsWith("data:") && !url.startsWith("blob:")) {
      result.pageErrors.push(`${name}: request outside the server: ${url}`);
    }
    const authorization = request.headers()["authorization"];
    result.authorizations.push({ page: name, method: request.method(), path: new URL(url).pathname, authorization });
  });
}

const phase = (page, wanted, timeout) =>
  page.waitForFunction((p) => document.body.dataset.callPhase === p, wanted, { timeout });

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 880 }, locale: "en-US" });
  // 1. No credential: the server's keys refuse the call, and the page says what it needs.
  const bare = await context.newPage();
  watch(bare, "bare");
  await bare.goto(base + "/");
  await bare.click("#call-button");
  await phase(bare, "error", 60000);
  result.refused.error = await bare.textContent("#error-text");
  await bare.close();
  log("refused without a credential");

  // 2. Opened from the backend's link: /#client_secret=ek_...
  const page = await context.newPage();
  watch(page, "secret");
  await page.goto(`${base}/#client_secret=${secret}`);
  result.withSecret.address = page.url(); // the fragment is wiped at once
  result.withSecret.html = await page.content();
  await page.click("#call-button");
  await phase(page, "listening", 60000);
  log("call connected with the client secret");
  const logged = (type) =>
    page.waitForFunction((t) => window.cosyagent.results.log.some((e) => e.type === t), type, { timeout: 120000 });
  await logged("session.created");
  await page.fill("#say-text", "Hello there!");
  await page.click("#say-send");
  await page.waitForFunction(
    () =>
      window.cosyagent.results.log.some(
        (e) => e.type === "response.done" && (e.status === "completed" || e.status === "incomplete"),
      ),
    null,
    { timeout: 180000 },
  );
  await page.waitForSelector(".turn.agent .bubble", { timeout: 30000 });
  result.withSecret.agentSaid = await page.textContent(".turn.agent .bubble");
  result.withSecret.events = await page.evaluate(() => window.cosyagent.results.log.map((e) => e.type));
  result.withSecret.localStorage = await page.evaluate(() => JSON.stringify(localStorage));
  result.withSecret.sessionStorage = await page.evaluate(() => JSON.stringify(sessionStorage));
  await page.screenshot({ path: path.join(out, "voice-chat-client-secret.png") });
  await page.click("#call-button");
  await context.close();
} catch (error) {
  result.failure = String(error && error.stack ? error.stack : error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
