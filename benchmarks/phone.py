"""Phone calls against the WebSocket figure: ``python -m benchmarks.phone``.

One server (``cosyagent serve``, the embedded default models, a throwaway data directory, the
SIP endpoint on a free UDP port of 127.0.0.1) is called with the same real spoken questions
over each transport (those of ``cosyagent bench --clips questions``: tests/data clips cut
before the speaker's next word), one fresh call per turn (benchmarks/phone_lines.py):

- ``websocket``: the Realtime WebSocket (openai SDK), pcm16 at 24 kHz: the reference figure;
- ``twilio``: Twilio's media-stream protocol, μ-law 8 kHz frames replayed in real time;
- ``sip-pcmu``, ``sip-g722``: a real INVITE / 200 OK / ACK on UDP, then RTP (PCMU or G.722)
  from a socket of our own, paced in real time (an RTP-level client: no phone's jitter
  buffer or sound card between the packets and the clock).

Per turn: **voice-to-voice**, from the end of the question's speech (the wall-clock time its
last spoken sample was sent) to the first 20 ms of the agent's audio louder than silence;
then, 0.5 s into the reply, the caller speaks again (another clip): **barge-in** is the time
from the start of that speech to Twilio's ``clear``, or for SIP to the last RTP packet of the
reply before the stream stopped (the agent sends no RTP between replies; counted when it stops
0.1-3 s after the caller started: sooner is the reply's own end, later is no barge-in). The
WebSocket row has no barge-in figure (``cosyagent bench`` measures it there). Separately,
**WER** of the server's own transcripts (``conversation.item.input_audio_transcription.completed``)
of the clips sent as μ-law 8 kHz (what a G.711 call delivers; the session decodes it as a phone session does) and, for
comparison, as 24 kHz pcm16, against the reference texts of tests/data/README.md.

**The LLM's prompt cache is kept equal.** llama.cpp's server keeps each slot's prompt, so a
question asked again is answered from its cache, its first token ~0.5 s sooner: with the
transports always called in one order, every call after the first of a round found the
question cached and the first transport (the WebSocket) alone paid for it (measured
2026-12-02: the same WebSocket client, 24 kHz first then μ-law, 2286 vs 1571 ms, 0.7 s apart
from ``response.created`` to the first audio delta). So each round begins with an unrecorded
WebSocket call asking the round's question, and the transports' order rotates from round to
round. Voice-to-voice here is therefore that of a question the LLM has cached: compare the
transports with each other, and take a first-time question's figure from ``cosyagent bench``.

The table: p50/p95 and the number of turns per transport, the gaps to the WebSocket p50, and
the WER rows. A JSON report goes to benchmarks/results/phone-DATE.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks import harness
from benchmarks.phone_lines import Line, SipLine, TwilioLine, WsLine
from benchmarks.records import questions
from cosyagent.audio.pcm import resample
from cosyagent.talk import RATE, Clip
from tests.support import REFERENCES, read_clip, word_error_rate

logger = logging.getLogger(__name__)

BARGE_IN_CLIP = "en_news_movement_8k.wav"
WER_CLIPS = ("en_dublin_q.wav", "en_wealth_tax_q.wav", "en_news_movement_8k.wav")
TRANSPORTS = ("websocket", "twilio", "sip-pcmu", "sip-g722")
BARGE_AFTER_S = 0.5  # into the reply
STOP_WITHIN_S = 3.0  # a SIP reply that stops later than this after the caller spoke was not interrupted
STOP_GAP_S = 0.2  # no RTP from the agent for this long: its stream stopped
MIN_REACTION_S = 0.1  # a stop sooner than this after the caller spoke is the reply's own end
REPLY_TIMEOUT_S = 90.0
RESULTS = Path(__file__).parent / "results"
IDLE_CORES = 0.15  # the server's process tree below this: idle
SETTLE_MAX_S = 60.0
Server = tuple[str, int, int, int]  # base URL, HTTP port, SIP port, pid


def in_codec(clip: Clip, line: Line) -> bytes:
    """A 24 kHz clip in the line's codec (resampled to its rate)."""
    rate = line.codec.rate
    return line.codec.encode(clip.samples if rate == RATE else resample(clip.samples, RATE, rate))


def barge_in_clip() -> Clip:
    return Clip.from_audio(read_clip(BARGE_IN_CLIP, RATE), RATE, BARGE_IN_CLIP)


def make_line(transport: str, url: str, port: int, sip_port: int) -> Line:
    if transport == "websocket":
        return WsLine(url, "pcm24")
    if transport == "twilio":
        return TwilioLine(port)
    return SipLine(sip_port, transport.removeprefix("sip-"))


async def wait_for(check: Callable[[], float | None], timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    # Polls what the line's listener stamped (at arrival): the 10 ms poll does not change a stamp.
    while (found := check()) is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return found


async def barge_in_ms(line: Line, transport: str, at: float) -> float | None:
    """From ``at`` (the caller's speech start) to the clear (Twilio), or to the last RTP packet
    of the reply before the stream stopped (SIP: the agent sends no packets between replies,
    so a gap of :data:`STOP_GAP_S` is the stop). None when it did not happen in time, or when
    the reply stopped sooner than :data:`MIN_REACTION_S` (it ended on its own)."""
    if transport == "twilio":
        cleared = await wait_for(lambda: next((t for t in line.heard.clears if t >= at), None), 10.0)
        return None if cleared is None else (cleared - at) * 1000
    frames = line.heard.frames

    def stopped() -> float | None:
        now = time.monotonic()
        last = frames[-1][0] if frames else at
        return last if now - last > STOP_GAP_S and now > at + MIN_REACTION_S else None

    last = await wait_for(stopped, 10.0)
    if last is None or not MIN_REACTION_S <= last - at <= STOP_WITHIN_S:
        return None
    return (last - at) * 1000


async def one_turn(line: Line, transport: str, question: Clip, barge: Clip) -> dict[str, Any]:
    await line.open()
    try:
        await asyncio.sleep(0.5)  # the line is open: a moment of silence first, as on a call
        asked_at = await line.say(in_codec(question, line))
        end_at = asked_at + question.speech_end_s
        first = await wait_for(lambda: line.heard.first_voice_after(end_at), REPLY_TIMEOUT_S)
        turn: dict[str, Any] = {"transport": transport, "clip": question.name, "voice_to_voice_ms": None}
        if first is None:
            return turn | {"error": f"no reply audio in {REPLY_TIMEOUT_S:g} s"}
        turn["voice_to_voice_ms"] = round((first - end_at) * 1000, 1)
        if transport == "websocket":
            return turn
        await asyncio.sleep(max(0.0, first + BARGE_AFTER_S - time.monotonic()))
        spoke_at = await line.say(in_codec(barge, line))
        barge_ms = await barge_in_ms(line, transport, spoke_at + barge.speech_start_s)
        turn["barge_in_ms"] = None if barge_ms is None else round(barge_ms, 1)
        if isinstance(line, SipLine):  # the codec, and the RTP clock: 160 ticks a 20 ms packet
            turn["negotiated"] = line.negotiated
            turn["rtp_timestamp_steps"], turn["rtp_payload_bytes"] = line.rtp_steps()
        return turn
    finally:
        await line.close()


async def prime_llm_cache(url: str, question: Clip, barge: Clip) -> None:
    """An unrecorded WebSocket call asking ``question``: afterwards every transport's call finds
    it in the LLM's prompt cache alike (see the module docstring)."""
    try:
        await one_turn(WsLine(url, "pcm24"), "websocket", question, barge)
    except (OSError, RuntimeError, TimeoutError) as exc:
        logger.warning("the call priming the LLM's cache failed: %s", exc)


async def transcript(url: str, name: str, codec: str) -> dict[str, Any]:
    """The server's transcript of ``name`` sent as ``codec`` over the WebSocket, and its WER."""
    line = WsLine(url, codec)
    await line.open()
    try:
        await asyncio.sleep(0.3)
        await line.say(line.codec.encode(read_clip(name, line.codec.rate)))
        await asyncio.wait_for(line.transcribed.wait(), REPLY_TIMEOUT_S)
        # A clip with a long pause is two turns: the second one's transcript may wait while the
        # server answers the first. Collect until none has come for a while.
        for _ in range(10):
            line.transcribed.clear()
            try:
                await asyncio.wait_for(line.transcribed.wait(), 3.0)
            except TimeoutError:
                break
    finally:
        await line.close()
    text = " ".join(line.transcripts)
    return {"clip": name, "codec": codec, "transcript": text, "wer": round(word_error_rate(REFERENCES[name], text), 3)}


async def settle(url: str, pid: int) -> None:
    """Until the server has no session left and its process tree (with the LLM server) uses
    under :data:`IDLE_CORES` for a second (the last call's work is over, e.g. a reply to the
    barge-in still decoding), at most :data:`SETTLE_MAX_S`: every call starts on an idle server."""
    deadline = time.monotonic() + SETTLE_MAX_S
    async with httpx.AsyncClient(timeout=5.0) as client:
        while time.monotonic() < deadline:
            meter = harness.CpuMeter(pid)
            await asyncio.sleep(1.0)
            busy = meter.stop()["server_cores"] or 0.0
            if (await client.get(f"{url}/health")).json().get("sessions") == 0 and busy < IDLE_CORES:
                return
    logger.warning("the server was still busy after %g s", SETTLE_MAX_S)


async def run(
    server: Server, turns: int, transports: tuple[str, ...], wer_clips: tuple[str, ...] = WER_CLIPS
) -> dict[str, Any]:
    url, port, sip_port, pid = server
    asked, barge = questions(), barge_in_clip()
    records: list[dict[str, Any]] = []
    for index in range(turns):  # the transports take turns: a busy moment of the CPU hits them alike
        question = asked[index % len(asked)]
        await settle(url, pid)
        await prime_llm_cache(url, question, barge)
        shift = index % len(transports)
        for transport in transports[shift:] + transports[:shift]:
            await settle(url, pid)
            meter = harness.CpuMeter(pid)
            try:
                record = await one_turn(make_line(transport, url, port, sip_port), transport, question, barge)
            except (OSError, RuntimeError, TimeoutError) as exc:
                record = {"transport": transport, "clip": question.name, "error": f"{type(exc).__name__}: {exc}"}
            cpu = meter.stop()  # the machine is shared: what else ran meanwhile
            record |= {"server_cores": cpu["server_cores"], "other_cores": cpu["other_cores"]}
            logger.info("turn %d %s", index + 1, record)
            records.append(record)
    wer = []
    for name in wer_clips:
        for codec in ("pcmu", "pcm24"):
            await settle(url, pid)
            wer.append(await transcript(url, name, codec))
    return {"turns": records, "wer": wer}


def summary(report: dict[str, Any], transports: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for transport in transports:
        mine = [t for t in report["turns"] if t["transport"] == transport]
        row: dict[str, Any] = {"turns": len(mine), "errors": sum(1 for t in mine if "error" in t)}
        for metric in ("voice_to_voice_ms", "barge_in_ms"):
            values = [float(t[metric]) for t in mine if t.get(metric) is not None]
            row[metric] = harness.summarize(values) if values else None
        others = [float(t["other_cores"]) for t in mine if t.get("other_cores") is not None]
        row["other_cores_mean"] = round(sum(others) / len(others), 2) if others else None
        rows[transport] = row
    return rows


def table(rows: dict[str, dict[str, Any]], wer: list[dict[str, Any]]) -> str:
    def cell(stats: dict[str, float] | None, key: str) -> str:
        return "–" if stats is None else f"{stats[key]:.0f}"

    reference = rows.get("websocket", {}).get("voice_to_voice_ms")
    lines = [
        "| transport | turns | voice-to-voice p50 | p95 | vs WebSocket p50 | barge-in p50 | p95 | n | other load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        v2v, barge = row["voice_to_voice_ms"], row["barge_in_ms"]
        gap = "–" if v2v is None or reference is None else f"{v2v['p50'] - reference['p50']:+.0f}"
        counted = "–" if barge is None else f"{barge['n']:.0f}"
        lines.append(
            f"| {name} | {row['turns']} ({row['errors']} failed) | {cell(v2v, 'p50')} | {cell(v2v, 'p95')} | {gap} | "
            f"{cell(barge, 'p50')} | {cell(barge, 'p95')} | {counted} | {row['other_cores_mean']} |"
        )
    lines += ["", "| clip | sent as | WER | the server's transcript |", "|---|---|---|---|"]
    lines += [f"| {w['clip']} | {w['codec']} | {w['wer']:.1%} | {w['transcript']} |" for w in wer]
    return "\n".join(lines)


@contextmanager
def phone_server() -> Iterator[Server]:
    """``cosyagent serve`` with the SIP endpoint on 127.0.0.1: yields (base URL, HTTP port, SIP port, pid)."""
    sip_port, rtp = harness.free_port(range(8400, 8500)), harness.free_port(range(8500, 8900)) // 2 * 2
    with tempfile.TemporaryDirectory(prefix="cosyagent-phone-") as folder:
        config = Path(folder) / "config.yaml"
        sip = {"enabled": True, "host": "127.0.0.1", "port": sip_port, "rtp_port_min": rtp, "rtp_port_max": rtp + 99}
        # capacity 2: a call that starts while the last one's session is still closing is not refused
        settings = {"server": {"data_dir": f"{folder}/data", "capacity": 2}, "sip": sip}
        config.write_text(yaml.safe_dump(settings))
        with harness.spawned_server(extra_args=["--config", str(config)]) as (url, pid):
            yield url, int(url.split(":")[2].split("/")[0]), sip_port, pid


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.phone", description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=4, help="calls per transport (default 4)")
    parser.add_argument(
        "--transports", default=",".join(TRANSPORTS), help="comma-separated subset of " + ", ".join(TRANSPORTS)
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="the JSON report (default benchmarks/results/phone-DATE.json)"
    )
    parser.add_argument(
        "--wer-clips",
        default=",".join(WER_CLIPS),
        help="comma-separated test clips whose 8 kHz transcripts are scored (default: all of "
        + ", ".join(WER_CLIPS)
        + ")",
    )
    args = parser.parse_args(argv)
    args.transports = tuple(t.strip() for t in args.transports.split(",") if t.strip())
    args.wer_clips = tuple(c.strip() for c in args.wer_clips.split(",") if c.strip())
    if not args.wer_clips or set(args.wer_clips) - set(WER_CLIPS):
        parser.error(f"--wer-clips: choose from {', '.join(WER_CLIPS)}")
    if not args.transports or set(args.transports) - set(TRANSPORTS):
        parser.error(f"--transports: choose from {', '.join(TRANSPORTS)}")
    if not 1 <= args.turns <= 100:
        parser.error("--turns must be 1-100")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    with phone_server() as server:
        report = asyncio.run(run(server, args.turns, args.transports, args.wer_clips))
    rows = summary(report, args.transports)
    report = {
        "benchmark": "phone",
        "started": started.isoformat(),
        "machine": harness.machine_info(),
        "summary": rows,
        **report,
    }
    path = args.out or harness.result_path(RESULTS, "phone", started)
    harness.write_result(path, report)
    print(table(rows, report["wer"]))
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
