"""REGISTER to a PBX or SIP trunk (RFC 3261 section 10), with digest authentication (:mod:`.sip_digest`).

Each configured registration (``sip.register``) binds our Contact to its address of record at
startup, answers the registrar's 401/407 challenges (MD5 or SHA-256, qop=auth, a fresh nonce
after ``stale=true``), refreshes at 85% of the Expires the registrar granted, retries after a
failure with a growing pause (5 s doubling to 5 min), and unbinds (Expires: 0) on shutdown.
Every failure is logged once per change, with why: 403 (wrong password or user), credentials
refused again, no answer (timeout), an unknown host, a refused TCP connection.

INVITEs the registrar then routes to our Contact reach the SIP endpoint like any other.
All REGISTERs of one registration share a Call-ID, with increasing CSeq (section 10.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cosyagent.config import SipRegistration
from cosyagent.transports.sip_dialog import ClientTransactions
from cosyagent.transports.sip_digest import Challenge, DigestError, authorization, new_cnonce, parse_challenge
from cosyagent.transports.sip_message import MAX_MESSAGE_BYTES, SipMessage, new_branch, new_tag, uri_of
from cosyagent.transports.sip_sender import TRANSACTION_S, SipSender
from cosyagent.transports.sip_tcp import Address, serve_stream

logger = logging.getLogger(__name__)

REFRESH_AT = 0.85  # of the granted Expires
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 300.0
UNREGISTER_TIMEOUT_S = 4.0
_URI = re.compile(r"^sip:(?:[^@;]+@)?([\w.-]+|\[[0-9A-Fa-f:.]+\])(?::(\d+))?")


class RegisterFailed(Exception):
    """Why a REGISTER did not bind: logged, shown in /v1/health, retried later."""


class Registration:
    """One ``sip.register`` entry, kept bound while :meth:`run` runs."""

    def __init__(
        self,
        settings: SipRegistration,
        sender: SipSender,
        transactions: ClientTransactions,
        handle: Callable[[bytes, Address], None],
        user_agent: str = "cosyagent",
    ) -> None:
        self.settings = settings
        self._sender = sender
        self._transactions = transactions
        self._handle = handle  # messages arriving on our TCP connection to the registrar
        self._user_agent = user_agent
        match = _URI.match(settings.registrar)
        assert match is not None  # SipRegistration checked it
        self._host, self._port = match.group(1).strip("[]"), int(match.group(2) or 5060)
        domain = settings.domain or match.group(1)
        self.request_uri = f"sip:{domain}" if settings.domain else settings.registrar
        self.aor = settings.aor or f"sip:{settings.username}@{domain}"
        self._call_id = f"{secrets.token_hex(10)}@cosyagent"
        self._tag = new_tag()
        self._cseq = 0
        self.challenge: Challenge | None = None  # the last one answered, reused (nc + 1) on refresh
        self._proxy = False  # the challenge came in a 407
        self._nc = 0
        self._tcp: asyncio.Task[None] | None = None
        self.state = "starting"  # registering | registered | failing | unregistered
        self.reason = ""
        self.until = 0.0  # wall-clock time the binding lapses
        self.retry_at = 0.0

    @property
    def contact(self) -> str:
        if self.settings.contact:
            return self.settings.contact
        tcp = ";transport=tcp" if self.settings.transport == "tcp" else ""
        return f"sip:{self.settings.username}@{self._sender.hostport()}{tcp}"

    def health(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"aor": self.aor, "registrar": self.settings.registrar, "state": self.state}
        if self.state == "registered":
            entry["until"] = _iso(self.until)
        if self.state == "failing":
            entry |= {"reason": self.reason, "retry_at": _iso(self.retry_at)}
        return entry

    async def run(self) -> None:
        """Register, refresh, and retry after failures, until cancelled. Cancel-safe."""
        pause = FIRST_RETRY_S
        while True:
            if self.state == "starting":
                self.state = "registering"
            try:
                granted = await self.register(self.settings.expires)
                if granted < 1:
                    raise RegisterFailed("the registrar's 200 OK granted no time (expires=0)")
            except RegisterFailed as exc:
                if self.state != "failing" or exc.args[0] != self.reason:
                    logger.error("sip register %s at %s failed: %s; retrying", self.aor, self.settings.registrar, exc)
                self.state, self.reason = "failing", str(exc)
                self.retry_at = time.time() + pause
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_S)
                continue
            if self.state != "registered":
                logger.info("sip: registered %s at %s for %d s", self.aor, self.settings.registrar, granted)
            pause = FIRST_RETRY_S
            self.state, self.reason, self.until = "registered", "", time.time() + granted
            await asyncio.sleep(max(1.0, granted * REFRESH_AT))

    async def unregister(self) -> None:
        """Remove our binding (Expires: 0), briefly: the server is stopping."""
        if self.state == "registered" or self.until > time.time():  # a failed refresh's binding may live on
            try:
                await self.register(0, UNREGISTER_TIMEOUT_S)
                logger.info("sip: unregistered %s at %s", self.aor, self.settings.registrar)
            except RegisterFailed as exc:
                logger.warning("sip: unregistering %s failed: %s", self.aor, exc)
        self.state = "unregistered"
        if self._tcp is not None:
            self._tcp.cancel()
            await asyncio.gather(self._tcp, return_exceptions=True)

    async def register(self, expires: int, timeout_s: float = TRANSACTION_S) -> int:
        """One REGISTER (and its answers to challenges); the Expires granted, or RegisterFailed."""
        to = await self._address()
        fresh_answered = False  # credentials for a challenge of this very exchange were refused?
        for _ in range(6):
            request = self._request(expires)
            final = await self._transactions.send(request, to, timeout_s)
            if final is None:
                self._drop_tcp()
                raise RegisterFailed(f"no answer from {to} in {timeout_s:g} s (timeout)")
            if 200 <= final.status < 300:
                return self._granted(final, expires)
            if final.status in (401, 407):
                challenge = self._challenge_of(final)
                if fresh_answered and not challenge.stale:
                    raise RegisterFailed(
                        f"{final.status} {final.reason}: the registrar refused the credentials of "
                        f"{self.settings.auth_username or self.settings.username!r} (wrong password or user name?)"
                    )
                self.challenge, self._proxy, self._nc = challenge, final.status == 407, 0
                fresh_answered = True
            elif final.status == 423 and (final.header("Min-Expires") or "").isdigit():
                expires = int(final.header("Min-Expires") or 0)
            elif final.status == 403:
                raise RegisterFailed(f"403 {final.reason}: wrong password, or the user is not allowed to register")
            else:
                raise RegisterFailed(f"{final.status} {final.reason}")
        raise RegisterFailed("the registrar kept challenging (6 tries)")

    def _challenge_of(self, final: SipMessage) -> Challenge:
        name = "Proxy-Authenticate" if final.status == 407 else "WWW-Authenticate"
        problems = []
        for value in final.headers_named(name):
            try:
                return parse_challenge(value)
            except DigestError as exc:
                problems.append(str(exc))
        raise RegisterFailed(f"{final.status} without a challenge we can answer: {'; '.join(problems) or 'none'}")

    def _request(self, expires: int) -> SipMessage:
        self._cseq += 1
        transport = self.settings.transport.upper()
        headers = [
            ("Via", f"SIP/2.0/{transport} {self._sender.hostport()};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self._tag}"),
            ("To", f"<{self.aor}>"),
            ("Call-ID", self._call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", f"<{self.contact}>"),
            ("Expires", str(expires)),
            ("User-Agent", self._user_agent),
        ]
        if self.challenge is not None:
            self._nc += 1
            credentials = authorization(
                self.challenge,
                username=self.settings.auth_username or self.settings.username,
                password=self.settings.password,
                method="REGISTER",
                uri=self.request_uri,
                nc=self._nc,
                cnonce=new_cnonce(),
            )
            headers.append(("Proxy-Authorization" if self._proxy else "Authorization", credentials))
        return SipMessage(method="REGISTER", uri=self.request_uri, headers=headers)

    def _granted(self, ok: SipMessage, asked: int) -> int:
        """Our binding's expires in the 200: its Contact's parameter (ours, or the only one),
        else the Expires header, else what we asked for."""
        contacts = [c for value in ok.headers_named("Contact") for c in re.split(r",(?=\s*(?:<|sip:|\"))", value)]
        for contact in contacts:
            if uri_of(contact) == self.contact or len(contacts) == 1:
                match = re.search(r";\s*expires=(\d+)", contact.split(">")[-1], re.IGNORECASE)
                if match:
                    return int(match.group(1))
        header = ok.header("Expires") or ""
        return int(header) if header.isdigit() else asked

    async def _address(self) -> Address:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(self._host, self._port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise RegisterFailed(f"cannot resolve {self._host} (DNS): {exc.strerror}") from None
        family = socket.AF_INET6 if ":" in self._sender.host else socket.AF_INET
        families = [info for info in infos if info[0] == family]
        if not families:
            raise RegisterFailed(f"{self._host} has no address of our family (sip.host {self._sender.host})")
        to = Address(str(families[0][4][0]), self._port, self.settings.transport)
        if to.transport == "tcp" and (self._tcp is None or self._tcp.done() or to not in self._sender.streams):
            await self._connect(to)
        return to

    async def _connect(self, to: Address) -> None:
        self._drop_tcp()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(to.host, to.port, limit=MAX_MESSAGE_BYTES, local_addr=(self._sender.host, 0)),
                10.0,
            )
        except (OSError, TimeoutError) as exc:
            raise RegisterFailed(f"cannot connect to {to}: {getattr(exc, 'strerror', None) or exc!r}") from None
        self._sender.streams[to] = writer
        self._tcp = asyncio.create_task(self._read(to, reader, writer), name=f"sip-register-{self.aor}")

    async def _read(self, to: Address, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve_stream(reader, to, self._handle)
        finally:
            if self._sender.streams.get(to) is writer:
                del self._sender.streams[to]
            writer.close()

    def _drop_tcp(self) -> None:
        if self._tcp is not None:
            self._tcp.cancel()
            self._tcp = None


class Registrations:
    """All of ``sip.register``: started with the SIP endpoint, unregistered before it stops."""

    def __init__(self, entries: list[Registration]) -> None:
        self.entries = entries
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(entry.run(), name=f"sip-register-{entry.aor}") for entry in self.entries]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.gather(*(entry.unregister() for entry in self.entries))

    def health(self) -> list[dict[str, Any]]:
        return [entry.health() for entry in self.entries]


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
