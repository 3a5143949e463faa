"""Checking a caller's SDP offer before a peer connection is built on it, and which ICE
candidates take part.

aiortc's parser accepts almost anything (an empty string parses as a session with no
media), so the checks that give a caller a useful 400 live here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import aioice.ice
from aiortc import sdp

AUDIO_CODECS = {"opus", "pcmu", "pcma"}  # what aiortc can encode and decode
MAX_OFFER_BYTES = 64 * 1024


class CallError(Exception):
    """A call request we refuse; ``status`` and ``code`` become the HTTP error."""

    status = 400
    code = "invalid_request"

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request's field at fault, where one is
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class OfferError(CallError):
    code = "invalid_offer"


class CallLimitError(CallError):
    status = 503
    code = "call_limit"


class CallNotFound(CallError):
    status = 404
    code = "call_not_found"


_SDP_LINE = re.compile(r"[a-z]=.*")  # one letter, "=", the value


def check_offer(text: str) -> sdp.SessionDescription:
    """Parse an SDP offer and make sure it can carry a voice call; raise OfferError saying why not."""
    if not text.strip():
        raise OfferError("the request body is empty: send an SDP offer (Content-Type: application/sdp)")
    if len(text.encode()) > MAX_OFFER_BYTES:
        raise OfferError(f"the SDP offer is over {MAX_OFFER_BYTES} bytes", code="offer_too_large", status=413)
    if not text.lstrip().startswith("v=0"):
        raise OfferError("not an SDP offer: it must start with 'v=0'")
    for number, line in enumerate(text.strip().splitlines(), start=1):
        if not _SDP_LINE.match(line.strip()):
            shown = line.strip()[:60]
            raise OfferError(f"line {number} of the SDP offer is not '<type>=<value>' (RFC 8866 5): {shown!r}")
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises anything from AssertionError to IndexError
        detail = f": {exc}" if str(exc) else ""
        raise OfferError(f"the SDP offer could not be parsed ({type(exc).__name__}{detail})") from exc
    audio = [m for m in description.media if m.kind == "audio"]
    if not audio:
        raise OfferError("the SDP offer has no audio section (m=audio): a call needs a microphone track")
    usable = [m for m in audio if m.port != 0 and m.direction != "inactive"]
    if not usable:
        raise OfferError("every audio section of the SDP offer is inactive or rejected (port 0)")
    if not any(codec.name.lower() in AUDIO_CODECS for m in usable for codec in m.rtp.codecs):
        raise OfferError("the SDP offer has no supported audio codec: offer opus (or PCMU/PCMA)")
    for media in description.media:
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise OfferError("the SDP offer has no ICE credentials (a=ice-ufrag / a=ice-pwd)")
        if media.dtls is None or not media.dtls.fingerprints:
            raise OfferError("the SDP offer has no DTLS fingerprint (a=fingerprint)")
    return description


def limit_host_addresses(addresses: Sequence[str]) -> None:
    """Offer only ``addresses`` as this process's ICE host candidates (``webrtc.host_addresses``).

    aioice gathers a candidate on every interface and has no per-connection setting, so this
    replaces its address lookup for the process. Nothing changes when ``addresses`` is empty.
    """
    if addresses:
        chosen = list(addresses)
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: chosen


def reachable_offer(offer_sdp: str) -> str:
    """The offer without remote candidates that our own candidates cannot pair with: when every
    host address we offer is loopback, a caller's candidates on other interfaces are dropped, so
    no connectivity check ever leaves the loopback interface."""
    if not all(ipaddress.ip_address(a).is_loopback for a in aioice.ice.get_host_addresses(True, True)):
        return offer_sdp
    newline = "\r\n" if "\r\n" in offer_sdp else "\n"
    lines = offer_sdp.split(newline)
    return newline.join(line for line in lines if not line.startswith("a=candidate:") or _loopback_candidate(line))


def _loopback_candidate(line: str) -> bool:
    fields = line.split()  # a=candidate:foundation component transport priority address port typ ...
    try:
        return len(fields) > 5 and ipaddress.ip_address(fields[4]).is_loopback
    except ValueError:  # an mDNS name (*.local): not loopback
        return False
