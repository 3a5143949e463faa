"""REGISTER to a real registrar (tests/e2e/kamailio_registrar.py: Debian's kamailio on 127.0.0.1)
with digest auth, and a call routed through it: baresip dials the registered user at
kamailio, kamailio's location lookup sends the INVITE to our Contact, the agent answers and
speaks. Wrong credentials and an unreachable registrar show in the log and /v1/health;
shutdown removes the bindings (Expires: 0)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from cosyagent.audio.pcm import resample
from cosyagent.config import SipConfig, SipRegistration, load_config
from cosyagent.runtime import Runtime
from cosyagent.transports.sip_register import RegisterFailed, Registration, Registrations
from cosyagent.transports.sip_server import SipServer, SipSettings
from cosyagent.web.app import create_app
from tests.e2e.baresip_caller import BARESIP, baresip_phone, microphone_wav
from tests.e2e.conftest import free_port, free_port_both, serve_asgi
from tests.e2e.kamailio_registrar import KAMAILIO, KAMCMD, kamailio

pytestmark = pytest.mark.skipif(
    KAMAILIO is None or KAMCMD is None, reason="kamailio is not installed (make phone-deps installs it)"
)
PASSWORD = "s3cret pass"


def entry(registrar: int, username: str, password: str = PASSWORD, **extra: str | int) -> SipRegistration:
    return SipRegistration(
        registrar=f"sip:127.0.0.1:{registrar}",
        username=username,
        password=password,
        **extra,  # type: ignore[arg-type]
    )


async def health_of(port: int) -> list[dict[str, str]]:
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://127.0.0.1:{port}/v1/health")).json()
    return list(body["sip"]["registrations"])


async def wait_states(port: int, states: dict[str, str], timeout_s: float = 20) -> list[dict[str, str]]:
    """/v1/health until each registration (by its aor) is in the given state."""
    deadline = time.monotonic() + timeout_s
    while True:
        health = await health_of(port)
        now = {item["aor"]: item["state"] for item in health}
        if all(now.get(aor) == state for aor, state in states.items()) or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.2)


@pytest.mark.skipif(BARESIP is None, reason="baresip is not installed (make phone-deps installs it)")
async def test_registers_takes_a_call_through_kamailio_and_unregisters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cosyagent.transports")
    (tmp_path / "kamailio").mkdir()
    async with kamailio(tmp_path / "kamailio", PASSWORD) as registrar:
        closed = free_port_both()  # nothing listens there: TCP connections are refused
        sip = SipConfig(
            enabled=True,
            port=free_port_both(),
            rtp_port_min=32000,
            rtp_port_max=32999,
            transports=("udp", "tcp"),
            register=(
                entry(registrar.port, "agent", expires=120),
                entry(registrar.port, "agent-tcp", transport="tcp"),
                entry(registrar.port, "agent2", "wrong", auth_username="agent"),  # 403 from kamailio
                entry(registrar.port, "other", "wrong"),  # challenged again
                entry(closed, "nobody", transport="tcp"),
            ),
        )
        config = load_config()
        server = dataclasses.replace(config.server, capacity=config.server.max_sessions)
        runtime = Runtime.from_config(dataclasses.replace(config, server=server, sip=sip))
        app = create_app(runtime)
        port = free_port()
        async with serve_asgi(app, port):
            endpoint: SipServer = app.state.sip_server
            aor = "sip:{}@127.0.0.1"
            health = await wait_states(
                port,
                {
                    aor.format("agent"): "registered",
                    aor.format("agent-tcp"): "registered",
                    aor.format("agent2"): "failing",
                    aor.format("other"): "failing",
                    aor.format("nobody"): "failing",
                },
            )
            by_aor = {item["aor"]: item for item in health}
            assert by_aor[aor.format("agent")]["state"] == "registered", health
            assert by_aor[aor.format("agent-tcp")]["state"] == "registered", health
            assert "until" in by_aor[aor.format("agent")]
            assert by_aor[aor.format("agent2")]["reason"] == (
                "403 Forbidden: wrong password, or the user is not allowed to register"
            )
            assert by_aor[aor.format("other")]["reason"] == (
                "401 Unauthorized: the registrar refused the credentials of 'other' (wrong password or user name?)"
            )
            assert by_aor[aor.format("nobody")]["reason"].startswith(f"cannot connect to tcp 127.0.0.1:{closed}: ")
            assert "retry_at" in by_aor[aor.format("nobody")]
            failures = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert any("sip register sip:agent2@127.0.0.1 at" in m and "403 Forbidden" in m for m in failures)
            hostport = endpoint.sender.hostport()
            assert sorted(await registrar.contacts()) == [
                f"sip:agent-tcp@{hostport};transport=tcp",
                f"sip:agent@{hostport}",
            ]

            home = tmp_path / "baresip"
            home.mkdir()
            microphone = home.parent / "mic.wav"
            microphone_wav(microphone, "en_dublin_q.wav", trailing_silence_s=60)
            async with baresip_phone(home, microphone) as phone:
                await phone.command("dial", f"sip:agent@127.0.0.1:{registrar.port}")
                await phone.wait_for("CALL_ESTABLISHED", 20)
                assert len(endpoint.calls) == 1
                call = endpoint.calls[0]
                deadline = time.monotonic() + 150
                while time.monotonic() < deadline and not (call.replies_done and not call.sending):
                    await asyncio.sleep(0.2)
                await asyncio.sleep(0.5)
                assert call.packets_sent > 25, f"no reply audio sent: {phone.log()[-3000:]}"
                await phone.command("hangup")
                await phone.wait_for("CALL_CLOSED", 10)
            reply = phone.recording()
            assert (np.abs(reply) > 0.02).sum() / 8000 >= 0.3, f"recording of {reply.size / 8000:.1f} s is silent"
            heard = await runtime.asr.transcribe(resample(reply, 8000, 16000))
            assert re.findall(r"[A-Za-z]{2,}", heard.text), heard.text

            # The TCP registration takes a call too (kamailio relays the INVITE over TCP).
            home = tmp_path / "baresip2"
            home.mkdir()
            async with baresip_phone(home, microphone) as phone:
                await phone.command("dial", f"sip:agent-tcp@127.0.0.1:{registrar.port}")
                await phone.wait_for("CALL_ESTABLISHED", 20)
                await phone.command("hangup")
                await phone.wait_for("CALL_CLOSED", 10)
            assert any("answered: PCMU from tcp 127.0.0.1" in r.getMessage() for r in caplog.records)
            # The refused registration is retried (first after 5 s): wait for the second try, however
            # quickly the calls above went (a fast CPU answers within the first 5 s).
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and registrar.log().count("user agent2\n") < 4:
                await asyncio.sleep(0.2)
        assert await registrar.contacts() == []  # shutdown sent Expires: 0 for both
        messages = [r.getMessage() for r in caplog.records]
        assert any(f"unregistered sip:agent@127.0.0.1 at sip:127.0.0.1:{registrar.port}" in m for m in messages)
        # Retried (5 s, then 10 s...) all along, logged once: the reason did not change.
        assert sum("sip register sip:agent2@127.0.0.1" in m for m in messages) == 1
        assert registrar.log().count("user agent2\n") >= 4  # two tries or more, each challenged first


async def test_sha256_digest_refresh_with_a_stale_nonce_and_unregister(tmp_path: Path) -> None:
    """SHA-256 challenges are answered; the refresh (at 85% of the 10 s granted) reuses the
    nonce, which has expired: kamailio says stale=true, the new nonce is answered, and that is
    no failure; stopping sends Expires: 0."""
    async with kamailio(tmp_path, PASSWORD, algorithm="SHA-256", nonce_expire=2) as registrar:
        settings = SipSettings("127.0.0.1", 0, 33000, 33100, 5.0, ("udp",))
        server = SipServer(settings, lambda model, session: None)  # type: ignore[arg-type,return-value]
        await server.start()
        registration = Registration(
            entry(registrar.port, "agent", expires=10), server.sender, server.transactions, server.message_received
        )
        registrations = Registrations([registration])
        try:
            registrations.start()
            for _ in range(50):
                if registration.state == "registered":
                    break
                await asyncio.sleep(0.1)
            assert registration.health()["state"] == "registered", registration.health()
            first = registration.until
            assert registration.challenge is not None and registration.challenge.algorithm == "SHA-256"
            assert registration.challenge.qop == ("auth",) and not registration.challenge.stale
            assert await registrar.contacts() == [f"sip:agent@{server.sender.hostport()}"]
            for _ in range(150):
                if registration.until > first:
                    break
                await asyncio.sleep(0.1)
            assert registration.until > first and registration.state == "registered"
            assert registration.challenge.stale  # the refresh's cached nonce had expired
            # A 407 (Proxy-Authenticate) is answered with Proxy-Authorization.
            proxied = Registration(
                entry(registrar.port, "viaproxy"), server.sender, server.transactions, server.message_received
            )
            assert await proxied.register(60) == 60
            assert proxied.challenge is not None and proxied.challenge.algorithm == "SHA-256"
            assert await proxied.register(0) == 0
            await registrations.stop()
            assert registration.state == "unregistered"
            assert await registrar.contacts() == []
        finally:
            await registrations.stop()
            await server.stop()


async def test_a_registrar_that_never_answers_is_a_timeout(tmp_path: Path) -> None:
    """REGISTERs to a UDP port that swallows them (a real socket that reads and never answers):
    resent per RFC 3261's timer E, then a precise failure."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    port = int(silent.getsockname()[1])
    server = SipServer(SipSettings("127.0.0.1", 0, 33200, 33300, 5.0, ("udp",)), lambda model, session: None)  # type: ignore[arg-type,return-value]
    await server.start()
    try:
        registration = Registration(
            entry(port, "agent", domain="example.test"), server.sender, server.transactions, server.message_received
        )
        with pytest.raises(RegisterFailed) as failed:
            await registration.register(60, timeout_s=1.6)
        assert str(failed.value) == f"no answer from udp 127.0.0.1:{port} in 1.6 s (timeout)"
        received = []
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(silent.recv(65536).decode())
        assert len(received) >= 3  # sent at 0, 0.5, 1.5 s
        first = received[0]
        assert first.startswith("REGISTER sip:example.test SIP/2.0\r\n")  # the domain is the Request-URI
        assert "\r\nTo: <sip:agent@example.test>\r\n" in first and "\r\nExpires: 60\r\n" in first
    finally:
        silent.close()
        await server.stop()
