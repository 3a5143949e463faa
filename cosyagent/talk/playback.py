"""Playing the reply as it arrives, through an audio player already on the machine (no audio
library is a dependency): ``paplay`` where a PulseAudio/PipeWire server runs, ``aplay`` where
ALSA has a playback device. Without either, :func:`find_player` says why and the reply is only saved."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cosyagent.talk.clip import RATE

logger = logging.getLogger(__name__)

FINISH_GRACE_S = 5.0  # how long past the queued audio's length a player may take to finish


@dataclass(frozen=True)
class PlayerChoice:
    """A player command that reads raw 24 kHz mono pcm16 on stdin, or why there is none."""

    command: tuple[str, ...] | None
    reason: str = ""  # when command is None: why nothing can play

    @property
    def name(self) -> str:
        return os.path.basename(self.command[0]) if self.command else ""


def _pulse_server_runs(env: Mapping[str, str]) -> bool:
    if env.get("PULSE_SERVER"):
        return True
    runtime_dir = Path(env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
    return (runtime_dir / "pulse" / "native").exists()


def _alsa_has_playback(dev_snd: Path) -> bool:
    return dev_snd.is_dir() and any(dev_snd.glob("pcmC*D*p"))


def find_player(env: Mapping[str, str] | None = None, dev_snd: Path = Path("/dev/snd")) -> PlayerChoice:
    """The player to use, or (command None) the reason the reply cannot be played here."""
    env = os.environ if env is None else env
    path = env.get("PATH", os.defpath)
    paplay, aplay = shutil.which("paplay", path=path), shutil.which("aplay", path=path)
    if paplay and _pulse_server_runs(env):
        return PlayerChoice((paplay, "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1"))
    if aplay and _alsa_has_playback(dev_snd):
        return PlayerChoice((aplay, "-q", "-t", "raw", "-f", "S16_LE", "-r", str(RATE), "-c", "1", "-"))
    if not (_pulse_server_runs(env) or _alsa_has_playback(dev_snd)):
        return PlayerChoice(None, "no audio output device was found")
    return PlayerChoice(None, "no audio player was found (install pulseaudio-utils or alsa-utils)")


class Player:
    """Feeds pcm16 to a player process as it arrives. A player that fails only costs the
    playback: :attr:`failure` says why, and the reply is still saved."""

    def __init__(self, choice: PlayerChoice) -> None:
        if choice.command is None:
            raise ValueError(f"nothing can play: {choice.reason}")
        self.choice = choice
        self._command: tuple[str, ...] = choice.command
        self.failure: str | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._queued_bytes = 0

    async def start(self) -> None:
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            self.failure = f"{self.choice.name} did not start: {exc.strerror or exc}"

    def write(self, pcm16: bytes) -> None:
        process = self._process
        if process is None or process.stdin is None or self.failure is not None:
            return
        if process.returncode is not None or process.stdin.is_closing():
            self.failure = f"{self.choice.name} stopped early"
            return
        process.stdin.write(pcm16)
        self._queued_bytes += len(pcm16)

    async def finish(self) -> None:
        """Let the player play what it has been given, then report how it went."""
        process = self._process
        if process is None:
            return
        budget_s = self._queued_bytes / (2 * RATE) + FINISH_GRACE_S
        if process.stdin is not None:
            process.stdin.close()  # end of audio: the player exits once it has played it
        try:
            async with asyncio.timeout(budget_s):
                _, stderr = await process.communicate()
        except TimeoutError:
            self.failure = f"{self.choice.name} did not finish within {budget_s:.0f} s"
            return
        finally:
            await self.close()
        if process.returncode and self.failure is None:
            detail = (stderr or b"").decode(errors="replace").strip().splitlines()
            self.failure = f"{self.choice.name} failed" + (f": {detail[-1]}" if detail else "")

    async def close(self) -> None:
        """Stop the player now if it still runs (interrupted, or after a failure)."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
