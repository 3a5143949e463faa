"""SIP messages (RFC 3261), sans-I/O: parse one datagram strictly, build responses and requests.

A request is parsed into its method, Request-URI, headers (names canonical, compact forms
expanded, values in order) and body. What is wrong with a message is a :class:`SipParseError`
whose ``reason`` becomes the reason phrase of the ``400`` answering it, when the message
names enough (a Via, From, To, Call-ID and CSeq) to be answered at all (``answerable``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 8192  # a bigger datagram is refused (513) or dropped
SIP_VERSION = "SIP/2.0"
COMPACT = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
}
CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Max-Forwards",
        "Supported",
        "Subject",
        "Content-Encoding",
        "Allow",
        "Accept",
        "User-Agent",
        "Server",
        "Retry-After",
        "Require",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "Expires",
        "Min-Expires",
        "Event",
        "Refer-To",
        "Referred-By",
        "Subscription-State",
    )
}
ANSWER_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")  # copied into every response
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_TAG = re.compile(r";\s*tag=([^;,\s]+)", re.IGNORECASE)
_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")

REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}


class SipParseError(ValueError):
    """A message that breaks RFC 3261; ``reason`` is short enough for a reason phrase."""

    def __init__(self, reason: str, partial: SipMessage | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial  # what could be parsed, to answer from

    @property
    def answerable(self) -> bool:
        """The message names a Via, From, To, Call-ID and CSeq: a 400 can be addressed."""
        return (
            self.partial is not None
            and self.partial.is_request
            and all(self.partial.header(name) for name in ANSWER_HEADERS)
        )


@dataclass
class SipMessage:
    """A request (``method`` and ``uri``) or a response (``status`` and ``reason``)."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (canonical spelling), or None."""
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq header; raises SipParseError when it has no such shape."""
        parts = (self.header("CSeq") or "").split()
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10 or not _TOKEN.match(parts[1]):
            raise SipParseError("Malformed CSeq", self)
        return int(parts[0]), parts[1]

    @property
    def branch(self) -> str:
        via = self.header("Via") or ""
        match = re.search(r";\s*branch=([^;,\s]+)", via, re.IGNORECASE)
        return match.group(1) if match else ""

    def to_bytes(self) -> bytes:
        start = (
            f"{self.method} {self.uri} {SIP_VERSION}"
            if self.is_request
            else f"{SIP_VERSION} {self.status} {self.reason}"
        )
        lines = [start, *(f"{name}: {value}" for name, value in self.headers if name != "Content-Length")]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def tag_of(header: str | None) -> str:
    """The ``tag`` parameter of a From or To value ('' when none)."""
    match = _TAG.search(header or "")
    return match.group(1) if match else ""


def uri_of(header: str) -> str:
    """The URI in a From, To or Contact value (``"Bob" <sip:b@h>;tag=1`` -> ``sip:b@h``)."""
    match = _URI_IN_BRACKETS.search(header)
    return (match.group(1) if match else header.split(";")[0]).strip()


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)  # the RFC 3261 magic cookie


def parse(data: bytes) -> SipMessage:
    """One SIP message from a datagram; SipParseError says what is wrong (and carries what
    could be parsed, to answer a request from)."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = data.partition(b"\n\n")  # bare LF line ends are tolerated
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("Message head is not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    message = _start_line(lines[0])
    _headers(message, lines[1:])
    if not separator:
        raise SipParseError("No empty line after the headers", message)
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("Message Too Large", message)
    _check(message, body)
    return message


def _start_line(line: str) -> SipMessage:
    parts = line.split(" ")
    if line.startswith(SIP_VERSION + " "):
        if len(parts) < 3 or not (len(parts[1]) == 3 and parts[1].isdigit()):
            raise SipParseError("Malformed status line")
        return SipMessage(status=int(parts[1]), reason=" ".join(parts[2:]))
    if len(parts) != 3 or parts[2] != SIP_VERSION:
        raise SipParseError("Malformed request line")
    method, uri = parts[0], parts[1]
    if not _TOKEN.match(method) or ":" not in uri:
        raise SipParseError("Malformed request line")
    return SipMessage(method=method, uri=uri)


def _headers(message: SipMessage, lines: list[str]) -> None:
    for line in lines:
        if line[:1] in (" ", "\t"):  # folded onto the previous header
            if not message.headers:
                raise SipParseError("Continuation line before any header", message)
            name, value = message.headers[-1]
            message.headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME.match(name):
            raise SipParseError("Malformed header line", message)
        lower = name.lower()
        canonical = COMPACT.get(lower) or CANONICAL.get(lower) or name
        message.headers.append((canonical, value.strip()))


def _check(message: SipMessage, body: bytes) -> None:
    """RFC 3261 section 8.2 and 18.3: the headers every request needs, a consistent CSeq, the body's length."""
    for name in ANSWER_HEADERS:
        if not message.header(name):
            raise SipParseError(f"Missing {name} header", message)
    for name in ("Call-ID", "CSeq", "From", "To", "Content-Length", "Max-Forwards"):
        if len(message.headers_named(name)) > 1:
            raise SipParseError(f"More than one {name} header", message)
    number, method = message.cseq
    if message.is_request and method != message.method:
        raise SipParseError("CSeq method does not match the request", message)
    del number
    if message.is_request and not tag_of(message.header("From")):
        raise SipParseError("From header without a tag", message)
    length_text = message.header("Content-Length")
    if length_text is None:
        message.body = body  # UDP: the rest of the datagram
        return
    if not length_text.isdigit() or len(length_text) > 6:
        raise SipParseError("Malformed Content-Length", message)
    length = int(length_text)
    if length > len(body):
        raise SipParseError("Content-Length larger than the body", message)
    message.body = body[:length]


def response(request: SipMessage, status: int, reason: str | None = None, to_tag: str = "") -> SipMessage:
    """A response to ``request`` copying its Via, From, To (plus ``to_tag`` when it has none),
    Call-ID and CSeq exactly."""
    headers = [(name, value) for name, value in request.headers if name in ANSWER_HEADERS]
    if to_tag:
        headers = [
            (name, f"{value};tag={to_tag}" if name == "To" and not tag_of(value) else value) for name, value in headers
        ]
    phrase = reason or REASONS.get(status, "Unknown")
    return SipMessage(status=status, reason=_phrase(phrase), headers=headers)


def _phrase(text: str) -> str:
    """A reason phrase: one line of printable text, bounded."""
    return " ".join(text.split())[:120] or "Error"
