"""The browser client in a real Chromium: Debian's /usr/bin/chromium driven by playwright-core.

The fake microphone plays a real-speech clip padded with digital silence (so that the
server's VAD sees the turn end), on a loop. A second, scripted microphone says the same
question on cue, so a conversation can be driven step by step (the user speaks again while
the first reply is prepared). The driver runs once for the module; each test reads what it
saw. Screenshots land in tests/browser/artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.e2e.conftest import LiveServer
from tests.e2e.webrtc_client import dublin_question, loopback_candidates
from tests.support import word_error_rate

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DRIVER = Path(__file__).resolve().parent / "drive_pages.mjs"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
PLAYWRIGHT = ROOT / "node_modules" / "playwright-core"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
README_SCREENSHOTS = (
    "voice-chat.png",
    "voice-chat-dark-zh.png",
    "voice-chat-phone.png",
    "voice-chat-phone-zh.png",
    "tts.png",
    "tts-phone.png",
)

pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM.exists() and PLAYWRIGHT.exists() and shutil.which("node")),
        reason="needs /usr/bin/chromium, node and node_modules/playwright-core (make test installs them)",
    ),
    pytest.mark.timeout(1200),  # the driver's real-model conversations take minutes on a small CPU
]
Result = dict[str, Any]
HEARD = ("completed", "interrupted", "cut")  # outcomes the exchanges count


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    """The server offers 127.0.0.1 only, and Chromium is allowed loopback candidates: the
    call works on any machine, whatever its network interfaces."""
    with loopback_candidates():
        yield


def fake_microphone() -> Path:
    """The real question padded with digital silence: 2 s before (the call connects meanwhile), 25 s
    after (the reply plays before Chromium loops the file and the user speaks again)."""
    speech = dublin_question(16000)
    audio = np.concatenate([np.zeros(2 * 16000, np.float32), speech, np.zeros(25 * 16000, np.float32)])
    path = ARTIFACTS / "fake-mic-en_dublin_q-padded-with-silence.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


def spoken_question() -> Path:
    """The question alone, for the scripted microphone (silence between cues is its own)."""
    path = ARTIFACTS / "question-en_dublin_q.wav"
    sf.write(path, dublin_question(48000), 48000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
async def pages(live_server: LiveServer) -> Result:
    ARTIFACTS.mkdir(exist_ok=True)
    return await drive(f"http://127.0.0.1:{live_server.port}", fake_microphone(), spoken_question())


async def drive(base_url: str, microphone: Path, question: Path) -> Result:
    """Run the driver in its own process group, so that a timeout also ends its Chromium."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        base_url,
        str(microphone),
        str(question),
        str(ARTIFACTS),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=1000)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    sys.stderr.write(stderr.decode(errors="replace"))
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    result: Result = json.loads(stdout.decode().strip().splitlines()[-1])
    (ARTIFACTS / "result.json").write_text(json.dumps(result, indent=2))
    return result


async def test_voice_chat_and_tts_pages_in_chromium_with_real_speech_padded_with_silence(
    pages: Result, live_server: LiveServer
) -> None:
    result = pages
    assert not result["pageErrors"], result["pageErrors"]
    chat, errors, tts = result["chat"], result["errors"], result["tts"]
    assert isinstance(chat, dict) and isinstance(errors, dict) and isinstance(tts, dict)
    for step in (chat, errors, tts):
        assert "failure" not in step, step.get("failure")

    # Voice chat: the user's words on the page, the agent's voice received and heard.
    assert chat["voices"] == ["joe"]  # the default engine, Piper, has one voice
    assert word_error_rate("how do I get to Dublin", chat["userTranscript"]) <= 0.5, chat["userTranscript"]
    assert chat["inboundAudioBytes"] > 5000
    assert chat["agentPeak"] > 0.02
    assert chat["latencies"] and 0 < chat["latencies"][0] < 30000
    assert chat["latencyText"].endswith(("ms", "s"))
    assert chat["agentText"].strip()
    assert chat["chineseStatus"] in ("正在聆听", "你正在说话", "思考中…", "助手正在说话")
    assert chat["chineseButton"] == "结束通话"
    await _wait_for(lambda: live_server.runtime.active_sessions == 0)  # ending the call freed it

    # Error states: clear messages, and the page is ready to try again.
    assert errors["micDenied"]["key"] == "err.mic-denied"
    assert "denied" in errors["micDenied"]["text"]
    assert errors["unreachable"]["key"] == "err.unreachable"
    assert errors["callLimit"]["key"] == "err.call-limit"
    assert all(case["phase"] == "error" for case in errors.values())

    # TTS playground: streamed, timed, downloadable.
    assert tts["firstPacketText"].endswith(" ms")
    assert 0 < tts["firstPacketMs"] <= tts["totalMs"]
    assert tts["playing"]
    assert tts["suggestedFilename"] == "speech.wav"
    audio, rate = sf.read(tts["download"], dtype="float32")
    assert rate == live_server.runtime.tts.sample_rate == 22050 and audio.ndim == 1  # Piper's rate
    assert abs(audio.size / rate - tts["audioSeconds"]) < 0.05
    assert audio.size / rate > 2.0 and float(np.sqrt(np.mean(audio**2))) > 0.01

    # The README's screenshots: written when missing, refreshed with COSYAGENT_UPDATE_SCREENSHOTS=1.
    for name in README_SCREENSHOTS:
        if not (DOCS_SCREENSHOTS / name).exists() or os.environ.get("COSYAGENT_UPDATE_SCREENSHOTS"):
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ARTIFACTS / name, DOCS_SCREENSHOTS / name)


def _conversation(pages: Result) -> Result:
    assert not pages["pageErrors"], pages["pageErrors"]
    conversation: Result = pages["conversation"]
    assert "failure" not in conversation, conversation.get("failure")
    return conversation


def _events(conversation: Result, kind: str) -> list[Result]:
    return [event for event in conversation["log"] if event["type"] == kind]


def _agent(bubbles: list[Result]) -> list[Result]:
    return [bubble for bubble in bubbles if bubble["kind"] == "agent"]


async def test_a_reply_cut_off_by_the_user_speaking_again_keeps_its_bubble(pages: Result) -> None:
    conversation = _conversation(pages)
    created = [event["response_id"] for event in _events(conversation, "response.created")]
    first, second = created[0], created[1]
    audible = {event["response_id"] for event in _events(conversation, "output_audio_buffer.started")}
    status = {event["response_id"]: event["status"] for event in _events(conversation, "response.done")}
    assert status[first] == "cancelled" and status[second] == "completed", status

    # Every reply created by the time the second one was done has its bubble, in order.
    done_at = next(e["at"] for e in _events(conversation, "response.done") if e["response_id"] == second)
    replies = _agent(conversation["afterVoice"]["bubbles"])
    assert len(replies) == len([e for e in _events(conversation, "response.created") if e["at"] <= done_at])
    cut, answer = replies[0], replies[created.index(second)]
    if first in audible:  # a fast machine: the user heard the start of it
        assert cut["outcome"] == "interrupted" and "interrupted" in cut["tags"], cut
        assert cut["text"].strip(), cut
    else:
        assert cut["outcome"] == "unspoken" and "interrupted before speaking" in cut["tags"], cut
    assert answer["outcome"] == "completed" and answer["text"].strip(), answer
    users = [b for b in conversation["afterVoice"]["bubbles"] if b["kind"] == "user"]
    assert len(users) == 2 and all(word_error_rate("how do I get to Dublin", u["text"]) <= 0.5 for u in users)


async def test_the_status_pill_thinks_from_the_turn_end_until_the_reply_is_audible(pages: Result) -> None:
    conversation = _conversation(pages)
    phases: list[Result] = conversation["phases"]
    second = _events(conversation, "response.created")[1]["response_id"]
    started_at = next(
        e["at"] for e in _events(conversation, "output_audio_buffer.started") if e["response_id"] == second
    )
    turn_end = max(e["at"] for e in _events(conversation, "input_audio_buffer.speech_stopped") if e["at"] <= started_at)
    after = [p for p in phases if p["at"] >= turn_end]
    speaking = next(i for i, p in enumerate(after) if p["phase"] == "agent-speaking")
    assert abs(after[speaking]["at"] - started_at) < 100  # this reply's audio, not another's
    leading = [p["phase"] for p in after[: speaking + 1]]
    assert "listening" not in leading, leading
    assert leading[-2:] == ["thinking", "agent-speaking"], leading
    assert [p["phase"] for p in phases][:2] == ["connecting", "listening"]
    assert {"listening", "user-speaking", "thinking", "agent-speaking", "ended"} <= {p["phase"] for p in phases}


async def test_exchanges_count_replies_heard_not_user_turns(pages: Result) -> None:
    conversation = _conversation(pages)
    final = conversation["final"]
    heard = [b for b in _agent(final["bubbles"]) if b["outcome"] in HEARD]
    users = [b for b in final["bubbles"] if b["kind"] == "user"]
    assert int(final["exchanges"]) == len(heard) >= 3
    assert len(users) == 5  # two spoken questions, three typed messages
    assert int(conversation["afterVoice"]["exchanges"]) == len(
        [b for b in _agent(conversation["afterVoice"]["bubbles"]) if b["outcome"] in HEARD]
    )


async def test_hanging_up_clears_pending_bubbles(pages: Result, live_server: LiveServer) -> None:
    conversation = _conversation(pages)
    assert conversation["pendingBeforeHangUp"] >= 1
    assert conversation["pendingAfterHangUp"] == 0
    assert all(b["text"] != "…" for b in conversation["final"]["bubbles"])
    assert conversation["final"]["bubbles"][-1] == {
        "kind": "user",
        "outcome": None,
        "pending": False,
        "typed": True,
        "text": "Tell me everything you know about Dublin.",
        "tags": [],
    }
    await _wait_for(lambda: live_server.runtime.active_sessions == 0)


async def test_a_typed_message_gets_a_reply_and_mute_silences_the_microphone(pages: Result) -> None:
    conversation = _conversation(pages)
    assert conversation["muteLabel"] == "Unmute"
    assert conversation["speechStartsWhileMuted"] == 0
    assert conversation["typedReply"]["text"].strip() and not conversation["typedReply"]["pending"]
    final = conversation["final"]["bubbles"]
    typed = [i for i, b in enumerate(final) if b["typed"]]
    assert final[typed[0]]["text"] == "What is the capital of France? Answer in one short sentence."
    answer = final[typed[0] + 1]
    assert answer["kind"] == "agent" and answer["outcome"] in HEARD and answer["text"].strip()


async def test_a_reply_length_limit_set_on_the_page_cuts_the_reply_and_its_bubble_says_so(pages: Result) -> None:
    conversation = _conversation(pages)
    assert conversation["serverReplyLimit"] == "80"  # the server's max_output_tokens, shown until changed
    assert conversation["replyLimitUpdated"] == 6
    done, bubble = conversation["cutReply"]["done"], conversation["cutReply"]["bubble"]  # as the page logged it
    assert done["status"] == "incomplete", done
    assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert bubble["outcome"] == "cut" and bubble["text"].strip(), bubble
    assert "cut short: reply length limit" in bubble["tags"], bubble


async def test_event_log_timings_devices_turn_detection_and_connection_quality(pages: Result) -> None:
    conversation = _conversation(pages)
    log = conversation["eventLog"]
    entries = log["entries"]
    assert 0 < len(entries) <= 200 and log["count"] >= len(entries)
    assert [e["time"] for e in entries] == sorted((e["time"] for e in entries), reverse=True)  # newest first
    seen = {(e["from"], e["type"]) for e in entries}
    for client in ("session.update", "conversation.item.create", "response.create"):
        assert ("client", client) in seen, client
    for server in ("session.updated", "response.created", "response.done", "output_audio_buffer.started"):
        assert ("server", server) in seen, server
    assert json.loads(log["opened"]["body"])["type"] == log["opened"]["type"]

    timings = dict(conversation["timings"])
    for stage in ("End of turn", "Speech recognition", "LLM first token", "TTS first audio", "Voice-to-voice"):
        assert timings.get(stage, "").endswith(("ms", "s")), (stage, timings)

    assert len(conversation["microphones"]) >= 2  # the system default and Chromium's fake devices
    assert conversation["speakerPicker"]
    detection = [e["turn_detection"] for e in _events(conversation, "session.updated")][-1]
    assert detection["type"] == "server_vad" and detection["silence_duration_ms"] == 600

    quality = conversation["quality"]
    assert quality["packetsReceived"] > 0 and quality["jitterMs"] is not None, quality
    assert "ms" in conversation["qualityText"]


async def test_both_pages_fit_desktop_and_phone_widths_in_both_languages(pages: Result) -> None:
    conversation = _conversation(pages)
    layouts: dict[str, Result] = dict(pages["layout"])
    assert len(layouts) == 2 * 3 * 2, sorted(layouts)  # chat and TTS, 1280/390/360 px, en and zh
    layouts |= {"chat-call-390-en": conversation["phone"], "chat-call-390-zh": conversation["phoneZh"]}
    layouts["tts-done-360-en"] = pages["tts"]["phone"]
    for name, layout in layouts.items():
        width, height = layout["innerWidth"], layout["innerHeight"]
        assert layout["scrollWidth"] <= width, (name, layout)  # no sideways scroll
        theme = layout["theme"]
        assert theme["left"] >= 0 and theme["right"] <= width and theme["top"] >= 0 and theme["bottom"] <= height
        assert layout["navLines"] == [1, 1], (name, layout)  # nav links never wrap
        assert set(layout["statLines"]) == {1}, (name, layout)  # timers and stats on one line
        voice = layout["voice"]
        assert voice["left"] >= 0 and voice["right"] <= width and voice["width"] >= 150, (name, layout)
    assert conversation["phoneZh"]["lang"] == "zh-CN"
    # The embedded ASR is English-only: the Chinese page says so (with the model), the English one does not.
    assert conversation["phoneZh"]["asrNote"] and "只听得懂英语" in conversation["phoneZh"]["asrNote"], conversation
    assert "moonshine-base-en" in conversation["phoneZh"]["asrNote"]  # the default recognizer, named
    assert conversation["phone"]["asrNote"] is None


async def _wait_for(condition: object, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)
