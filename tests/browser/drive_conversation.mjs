// The voice chat page through a whole conversation, driven step by step: a scripted microphone
// says the question on cue, so the user speaks again while the first reply is being prepared;
// then a typed message, mute, a reply cut at a length limit set on the page, the event log,
// timings, phone-size screenshots, and a hang-up while a reply is pending. Used by drive_pages.mjs; `io` carries its helpers and result.
import fs from "node:fs";

const PHONE = { width: 390, height: 844 };

// Runs in the page: getUserMedia answers with a Web Audio stream, digital silence until
// window.testMicrophone.say() plays the question into it.
function scriptedMicrophone(clipBase64) {
  const bytes = Uint8Array.from(atob(clipBase64), (c) => c.charCodeAt(0));
  const mic = { context: null, destination: null, clip: null };
  const realGetUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async () => {
    // As with a real microphone, the permission lets the page list the devices by name.
    (await realGetUserMedia({ audio: true })).getTracks().forEach((track) => track.stop());
    mic.context = mic.context || new AudioContext();
    mic.clip = mic.clip || (await mic.context.decodeAudioData(bytes.buffer.slice(0)));
    mic.destination = mic.context.createMediaStreamDestination();
    // A source that always plays (zeros): with none, the track stops sending packets.
    const hum = mic.context.createConstantSource();
    hum.offset.value = 0;
    hum.connect(mic.destination);
    hum.start();
    return mic.destination.stream;
  };
  window.testMicrophone = {
    say: () =>
      new Promise((resolve) => {
        const source = mic.context.createBufferSource();
        source.buffer = mic.clip;
        source.connect(mic.destination);
        source.onended = resolve;
        source.start();
      }),
  };
}

const events = (page, type) =>
  page.evaluate((wanted) => window.cosyagent.results.log.filter((e) => e.type === wanted), type);

// Until the page has logged an event of ``type`` for response ``id``.
async function waitForResponseEvent(page, type, id, timeout) {
  await page.waitForFunction(
    ([wanted, response]) => window.cosyagent.results.log.some((e) => e.type === wanted && e.response_id === response),
    [type, id],
    { timeout },
  );
}

async function waitForEvent(page, type, count, timeout = 180000) {
  await page.waitForFunction(
    ([wanted, n]) => window.cosyagent.results.log.filter((e) => e.type === wanted).length >= n,
    [type, count],
    { timeout },
  );
}

// Types ``text`` into the message box and sends it; the id of the reply it starts.
async function typeMessage(page, text) {
  const created = (await events(page, "response.created")).length;
  await page.fill("#say-text", text);
  await page.press("#say-text", "Enter");
  await waitForEvent(page, "response.created", created + 1);
  return (await events(page, "response.created"))[created].response_id;
}

async function bubbles(page) {
  return page.$$eval("#transcript .turn", (items) =>
    items.map((item) => ({
      kind: item.classList.contains("user") ? "user" : "agent",
      outcome: item.dataset.outcome || null,
      pending: item.classList.contains("pending"),
      typed: item.classList.contains("typed"),
      text: item.querySelector(".bubble").textContent,
      tags: [...item.querySelectorAll(".meta .tag")].map((tag) => tag.textContent),
    })),
  );
}

// What the layout checks look at: sideways scroll, the theme button, nav links on one line.
export async function measureLayout(page) {
  return page.evaluate(() => {
    const rect = (el) => {
      const r = el.getBoundingClientRect();
      return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width };
    };
    const lines = (el) => {
      const range = document.createRange();
      range.selectNodeContents(el);
      return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
    };
    const voice = document.querySelector("#voice");
    return {
      scrollWidth: document.scrollingElement.scrollWidth,
      innerWidth: window.innerWidth,
      innerHeight: window.innerHeight,
      theme: rect(document.querySelector("#theme-toggle")),
      navLines: [...document.querySelectorAll(".nav a")].map(lines),
      statLines: [...document.querySelectorAll(".stat b")].map(lines),
      voice: voice ? rect(voice) : null,
      lang: document.documentElement.lang,
      asrNote: (() => {
        const note = document.querySelector("#asr-language-note");
        return note && !note.hidden ? note.textContent : null;
      })(),
    };
  });
}

async function voiceTurns(page, c, io) {
  // The user speaks, and speaks again as soon as the reply to the first question exists.
  await page.evaluate(() => window.testMicrophone.say());
  await waitForEvent(page, "response.created", 1);
  io.log("first reply created; the user speaks again");
  await page.evaluate(() => window.testMicrophone.say());
  await waitForEvent(page, "response.created", 2);
  const [, second] = await events(page, "response.created");
  io.log("second reply created");
  await waitForResponseEvent(page, "output_audio_buffer.started", second.response_id, 180000);
  io.log("second reply audible");
  // Done (all its audio sent): the server's timings come with it.
  await waitForResponseEvent(page, "response.done", second.response_id, 400000);
  c.afterVoice = { bubbles: await bubbles(page), exchanges: await page.textContent("#turn-count") };
  // The reply's timings, opened from under its bubble.
  const reply = page.locator(".turn.agent[data-outcome]").last();
  await reply.locator(".tag.toggle").click();
  c.timings = await reply.locator(".timings dl").evaluate((list) =>
    [...list.querySelectorAll("dt")].map((dt) => [dt.textContent, dt.nextElementSibling.textContent]),
  );
}

async function mutedAndTyped(page, c, io) {
  await page.click("#mute");
  c.muteLabel = await page.textContent("#mute-label");
  const heardBefore = (await events(page, "input_audio_buffer.speech_started")).length;
  await page.evaluate(() => window.testMicrophone.say());
  await page.waitForTimeout(1500);
  c.speechStartsWhileMuted = (await events(page, "input_audio_buffer.speech_started")).length - heardBefore;
  const reply = await typeMessage(page, "What is the capital of France? Answer in one short sentence.");
  // Its first words are enough: the next typed message cuts it off if it is still talking.
  await page.waitForFunction(
    (id) =>
      window.cosyagent.results.log.some(
        (e) => e.type === "response.output_audio_transcript.delta" && e.response_id === id,
      ),
    reply,
    { timeout: 300000 },
  );
  io.log("typed message answered");
  c.typedReply = (await bubbles(page)).filter((b) => b.kind === "agent").pop();
  c.qualityText = await page.textContent("#quality");
  c.quality = await page.evaluate(() => window.cosyagent.quality.last);
}

// The reply length limit: the server's shown first; set low on the page, a reply stops there
// and its bubble says why.
async function cutShort(page, c, io) {
  const before = (await events(page, "response.created")).pop().response_id;
  // The typed message's reply says its sentence first: this step is not about cutting it off.
  await waitForResponseEvent(page, "response.done", before, 300000);
  c.serverReplyLimit = await page.inputValue("#max-tokens");
  const updated = (await events(page, "session.updated")).length;
  await page.fill("#max-tokens", "6");
  await page.locator("#max-tokens").blur();
  await waitForEvent(page, "session.updated", updated + 1, 10000);
  c.replyLimitUpdated = (await events(page, "session.updated"))[updated].max_output_tokens;
  const reply = await typeMessage(page, "Tell me about Dublin in three sentences.");
  await waitForResponseEvent(page, "response.done", reply, 300000);
  c.cutReply = {
    done: (await events(page, "response.done")).find((e) => e.response_id === reply),
    bubble: (await bubbles(page)).filter((b) => b.kind === "agent").pop(),
  };
  io.log("reply cut at the length limit");
}

async function screenshots(page, c, io) {
  await io.shot(page, "voice-chat.png");
  await page.setViewportSize(PHONE);
  await page.evaluate(() => window.scrollTo(0, 0));
  c.phone = await measureLayout(page);
  await io.shot(page, "voice-chat-phone.png");
  await page.click("#lang-toggle");
  c.phoneZh = await measureLayout(page);
  await io.shot(page, "voice-chat-phone-zh.png");
  await page.click("#lang-toggle");
  await page.setViewportSize(io.viewport);
}

async function eventLog(page) {
  await page.click("#events summary");
  await page.click("#event-log li:first-child summary");
  // Events keep arriving: by now the opened entry may no longer be the first, and its body
  // is written on the (asynchronous) toggle event, so wait for it and read that entry.
  await page.waitForSelector("#event-log details[open] pre", { timeout: 5000 });
  return page.evaluate(() => ({
    count: Number(document.querySelector("#event-count").textContent),
    entries: [...document.querySelectorAll("#event-log > li")].map((li) => ({
      from: li.classList.contains("client") ? "client" : "server",
      type: li.dataset.type,
      time: li.querySelector("time").textContent,
    })),
    opened: (() => {
      const li = document.querySelector("#event-log details[open] pre").closest("li");
      return { type: li.dataset.type, body: li.querySelector("pre").textContent };
    })(),
  }));
}

async function hangUpWhilePending(page, c) {
  await page.fill("#say-text", "Tell me everything you know about Dublin.");
  await page.press("#say-text", "Enter");
  await page.waitForSelector(".turn.agent.pending", { timeout: 60000 });
  c.pendingBeforeHangUp = await page.$$eval(".turn.pending", (items) => items.length);
  await page.click("#call-button");
  await page.waitForFunction(() => document.body.dataset.callPhase === "ended", null, { timeout: 10000 });
  c.pendingAfterHangUp = await page.$$eval(".turn.pending", (items) => items.length);
  c.final = { bubbles: await bubbles(page), exchanges: await page.textContent("#turn-count") };
  await page.waitForTimeout(500); // the hangup request leaves
}

async function converse(page, c, io) {
  await page.goto(io.base + "/");
  await io.voicesLoaded(page);
  c.speakerPicker = await page.evaluate(() => !document.querySelector("#speaker").disabled);
  await page.selectOption("#td-type", "server_vad");
  await page.locator("#td-silence").fill("600");
  await page.locator("#td-silence").blur();
  await page.fill("#instructions", "You are a friendly voice assistant. Answer in one short sentence.");
  await page.click("#call-button");
  await page.waitForFunction(() => document.body.dataset.callPhase === "listening", null, { timeout: 30000 });
  await page.waitForFunction(() => document.querySelectorAll("#mic option").length > 1, null, { timeout: 5000 });
  c.microphones = await page.$$eval("#mic option", (options) => options.map((o) => o.value));
  await page.selectOption("#mic", c.microphones[c.microphones.length - 1]); // switched during the call
  await page.waitForTimeout(300);
  io.log("conversation connected");
  await voiceTurns(page, c, io);
  await mutedAndTyped(page, c, io);
  await cutShort(page, c, io);
  await screenshots(page, c, io);
  c.eventLog = await eventLog(page);
  await hangUpWhilePending(page, c);
}

export async function conversation(browser, io) {
  const context = await browser.newContext({ viewport: io.viewport, colorScheme: "light", locale: "en-US" });
  await context.addInitScript(scriptedMicrophone, fs.readFileSync(io.question).toString("base64"));
  const page = await context.newPage();
  io.watch(page, "conversation");
  const c = io.result.conversation;
  try {
    await converse(page, c, io);
  } finally {
    const seen = await page
      .evaluate(() => ({ log: window.cosyagent.results.log, phases: window.cosyagent.results.phases }))
      .catch(() => ({}));
    Object.assign(c, seen);
    await io.shot(page, "voice-chat-conversation-last.png").catch(() => {});
    await context.close();
  }
}

// Both pages at desktop and phone widths, in both languages, before any call.
export async function layouts(browser, io) {
  for (const [name, path] of [["chat", "/"], ["tts", "/tts"]]) {
    for (const width of io.widths) {
      for (const lang of ["en", "zh"]) {
        const context = await browser.newContext({ viewport: { width, height: 800 }, locale: "en-US" });
        await context.addInitScript((wanted) => localStorage.setItem("cosyagent.lang", wanted), lang);
        const page = await context.newPage();
        io.watch(page, `layout-${name}`);
        await page.goto(io.base + path);
        await io.voicesLoaded(page);
        io.result.layout[`${name}-${width}-${lang}`] = await measureLayout(page);
        await context.close();
      }
    }
  }
}
