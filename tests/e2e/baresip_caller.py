"""A real SIP phone for the SIP e2e tests: Debian's ``baresip`` on 127.0.0.1 only, with a temp
config dir. Its ``aufile`` module plays a speech clip (16-bit, at the codec's rate: 8 kHz for
G.711, 16 kHz for G.722) as the microphone, ``sndfile`` records what it decodes from the agent,
and ``ctrl_tcp`` drives it (dial, hang up) and reports call events, as netstring-framed JSON.
``codecs`` is what its account offers (the ``;audio_codecs=`` parameter): G.711 unless a test
asks for ``"G722"`` (aufile cannot resample: an 8 kHz microphone file needs an 8 kHz codec)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from cosyagent.audio.pcm import AudioF32
from tests.e2e.conftest import free_port, free_port_both
from tests.support import read_clip

BARESIP = shutil.which("baresip")


def microphone_wav(path: Path, clip: str, trailing_silence_s: float, rate: int = 8000) -> None:
    """``clip`` at ``rate`` mono S16LE (what aufile plays at the codec's rate: 8 kHz for G.711,
    16 kHz for G.722), then silence: aufile ends the call at the end of its file, so the
    silence keeps the line open for the reply."""
    speech = read_clip(clip, rate)
    lead, tail = np.zeros(rate // 2, np.float32), np.zeros(int(rate * trailing_silence_s), np.float32)
    sf.write(path, np.concatenate([lead, speech, tail]), rate, subtype="PCM_16")


class Baresip:
    """One baresip process and its control connection."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.events: list[dict[str, Any]] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._token = 0

    async def start(self, microphone: Path, codecs: str = "PCMU,PCMA") -> None:
        """Start baresip on fresh ports. A port found free can be taken (as some connection's
        ephemeral port) before baresip binds it; baresip then exits, and is started again."""
        (self.home / "rec").mkdir()
        (self.home / "accounts").write_text(f"<sip:caller@127.0.0.1>;regint=0;audio_codecs={codecs}\n")
        (self.home / "contacts").write_text("")
        for _ in range(3):
            if await self._start_on_fresh_ports(microphone):
                self._listener = asyncio.create_task(self._listen())
                return
            if "Address already in use" not in self.log():
                break
        raise RuntimeError(f"baresip's ctrl_tcp did not listen: {self.log()[-2000:]}")

    async def _start_on_fresh_ports(self, microphone: Path) -> bool:
        sip_port, ctrl_port = free_port_both(), free_port()
        (self.home / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen 127.0.0.1:{sip_port}",
                    "net_interface 127.0.0.1",  # loopback only
                    f"audio_source aufile,{microphone}",
                    f"audio_alert aufile,{microphone}",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",
                    "module g722.so",
                    "module aufile.so",
                    "module sndfile.so",
                    f"snd_path {self.home / 'rec'}",
                    "module_app menu.so",  # the dial and hangup commands
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen 127.0.0.1:{ctrl_port}",
                    "module_app account.so",
                    "",
                ]
            )
        )
        assert BARESIP is not None
        with (self.home / "log").open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                BARESIP, "-f", str(self.home), "-v", stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        for _ in range(100):
            with contextlib.suppress(OSError):
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", ctrl_port)
                return True
            if self._process.returncode is not None:
                return False
            await asyncio.sleep(0.1)
        self._process.terminate()
        await self._process.wait()
        return False

    async def command(self, name: str, params: str = "") -> None:
        assert self._writer is not None
        self._token += 1
        body = json.dumps({"command": name, "params": params, "token": str(self._token)}).encode()
        self._writer.write(f"{len(body)}:".encode() + body + b",")
        await self._writer.drain()

    async def wait_for(self, event_type: str, timeout_s: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    for event in self.events:
                        if event.get("type") == event_type:
                            return event
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            log = self.log()[-3000:]
            raise AssertionError(f"no {event_type} in {timeout_s:g} s; events {self.events}; log:\n{log}") from None

    def recording(self, rate: int = 8000) -> AudioF32:
        """What baresip decoded from the agent (sndfile's ``-dec`` dump), at the codec's ``rate``."""
        files = sorted((self.home / "rec").glob("*dec*.wav"))
        if not files:
            return np.zeros(0, np.float32)
        audio, found = sf.read(files[0], dtype="float32")
        assert found == rate, found
        return np.asarray(audio, np.float32)

    def log(self) -> str:
        return (self.home / "log").read_text(errors="replace")

    async def stop(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self.command("quit")
            self._writer.close()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._process is not None and self._process.returncode is None:
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except TimeoutError:
                self._process.terminate()
                await self._process.wait()

    async def _listen(self) -> None:
        assert self._reader is not None
        while True:
            length = await self._reader.readuntil(b":")
            body = await self._reader.readexactly(int(length[:-1]))
            await self._reader.readexactly(1)  # the netstring's ","
            message = json.loads(body)
            if message.get("event"):
                self.events.append(message)
                self._changed.set()


@contextlib.asynccontextmanager
async def baresip_phone(home: Path, microphone: Path, codecs: str = "PCMU,PCMA") -> AsyncIterator[Baresip]:
    phone = Baresip(home)
    try:
        await phone.start(microphone, codecs)
        yield phone
    finally:
        await phone.stop()
