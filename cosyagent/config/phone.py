"""The phone sections of the configuration: carrier media streams (``telephony``) and the native
SIP endpoint (``sip``, with its registrations). docs/phone.md explains each key."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from cosyagent.config.errors import ConfigError


@dataclass(frozen=True)
class TelephonyConfig:
    """Phone calls through a carrier's media stream (Twilio, Telnyx, Exotel, Plivo): README
    "Phone calls: Twilio" and "Phone calls: Telnyx, Exotel, Plivo"."""

    # The public host name (and port) carriers reach this server at, e.g. "agent.example.com"; it
    # goes into the stream URL of the TwiML and Plivo XML answers and the signed URL.
    # Empty: X-Forwarded-Host, else Host.
    public_host: str = ""
    # Twilio's auth token: when set, every webhook and media-stream request must carry a valid
    # X-Twilio-Signature, and the telephony routes need no API key.
    twilio_auth_token: str = ""

    def __post_init__(self) -> None:
        if "/" in self.public_host or " " in self.public_host:
            raise ConfigError(f"telephony.public_host must be a host name (and port): {self.public_host!r}")


_SIP_URI = re.compile(r"^sip:(?:[^@;\s]+@)?([\w.-]+|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?(?:;[^\s]*)?$")


@dataclass(frozen=True)
class SipRegistration:
    """One REGISTER of the SIP endpoint to a PBX or SIP trunk (docs/phone.md "Registering")."""

    registrar: str = ""  # sip:host[:port]: where REGISTERs go (port 5060 when not named)
    username: str = ""  # the user part of the address of record and of our Contact
    password: str = field(default="", repr=False)  # none: from the variable named by password_env
    password_env: str = "COSYAGENT_SIP_PASSWORD"
    auth_username: str = ""  # the digest user name when not the username
    domain: str = ""  # the address of record's domain (and the REGISTER's Request-URI); none: the registrar's host
    aor: str = ""  # the whole address of record, sip:user@domain, when it is not username@domain
    expires: int = 300  # asked for; refreshed at 85% of what the registrar grants
    transport: str = "udp"  # udp | tcp
    contact: str = ""  # our Contact URI (e.g. a public address behind NAT); none: sip:username@sip.host:sip.port

    def __post_init__(self) -> None:
        where = f"sip.register ({self.registrar or 'no registrar'})"
        if not _SIP_URI.match(self.registrar) or "@" in self.registrar:
            raise ConfigError(f"{where}: registrar must be sip:host[:port], got {self.registrar!r}")
        if not self.username or not self.password:
            raise ConfigError(f"{where}: needs a username and a password (or ${self.password_env})")
        if self.transport not in ("udp", "tcp"):
            raise ConfigError(f"{where}: transport must be udp or tcp, got {self.transport!r}")
        if not 10 <= self.expires <= 86400:
            raise ConfigError(f"{where}: expires must be 10-86400 s, got {self.expires}")
        for key in ("aor", "contact"):
            if getattr(self, key) and not _SIP_URI.match(getattr(self, key)):
                raise ConfigError(f"{where}: {key} must be a sip: URI, got {getattr(self, key)!r}")


_SIP_CODECS = ("g722", "pcmu", "pcma")  # G.722 first: wideband audio, better recognition


@dataclass(frozen=True)
class SipConfig:
    """The native SIP endpoint (docs/phone.md "SIP"): a PBX or SIP trunk calls it directly."""

    enabled: bool = False  # also turned on by `cosyagent serve --sip-port N`
    host: str = "127.0.0.1"  # the address SIP and RTP bind to, and the one the SDP answer names
    port: int = 5060
    transports: tuple[str, ...] = ("udp",)  # udp, tcp: both on the same port
    rtp_port_min: int = 10000  # each call takes one even port of this range for its RTP
    rtp_port_max: int = 10999
    rtp_timeout_s: float = 30.0  # a call with no RTP from the caller for this long is hung up (BYE)
    codecs: tuple[str, ...] = _SIP_CODECS  # our order of preference: the first one an offer has is chosen
    # Call control (docs/phone.md "Call control"): with a webhook URL, each INVITE rings (180),
    # a realtime.call.incoming event is POSTed there, and the call waits for
    # POST /v1/realtime/calls/{id}/accept or /reject; without one, every call is answered at once.
    webhook_url: str = ""
    webhook_secret: str = ""  # signs the event (Standard Webhooks, as OpenAI's: "whsec_<base64>" or any text)
    accept_timeout_s: float = 10.0  # no accept/reject in this long (from the INVITE): 480
    # REGISTERs to PBXs or SIP trunks, kept up while the server runs (a list, or one mapping).
    register: tuple[SipRegistration, ...] = field(default=(), metadata={"item": SipRegistration})

    def __post_init__(self) -> None:
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError as exc:
            raise ConfigError(f"sip.host must be an IP address to bind to: {self.host!r}") from exc
        if address.is_unspecified:
            raise ConfigError(f"sip.host {self.host} cannot be named in the SDP answer: set the machine's own address")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"sip.port must be 0-65535, got {self.port}")
        if not self.transports or set(self.transports) - {"udp", "tcp"}:
            raise ConfigError(f"sip.transports must be a list of udp and/or tcp, got {list(self.transports)}")
        if not 1024 <= self.rtp_port_min < self.rtp_port_max <= 65535:
            raise ConfigError("sip.rtp_port_min/rtp_port_max must be a range within 1024-65535, min below max")
        if self.rtp_timeout_s <= 0:
            raise ConfigError("sip.rtp_timeout_s must be positive")
        codecs, known = tuple(str(codec).lower() for codec in self.codecs), ", ".join(_SIP_CODECS)
        if not codecs:
            raise ConfigError(f"sip.codecs must name at least one codec of {known}")
        for name in codecs:
            if name not in _SIP_CODECS or codecs.count(name) > 1:
                why = f"unknown codec {name!r} (known: {known})" if name not in _SIP_CODECS else f"names {name} twice"
                raise ConfigError(f"sip.codecs: {why}")
        object.__setattr__(self, "codecs", codecs)
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError(f"sip.webhook_url must be an http:// or https:// URL, got {self.webhook_url!r}")
        if not 0 < self.accept_timeout_s <= 300:
            raise ConfigError("sip.accept_timeout_s must be within 0-300 s")
        if any(entry.transport not in self.transports for entry in self.register):
            raise ConfigError("sip.register: each registration's transport must be one of sip.transports")
