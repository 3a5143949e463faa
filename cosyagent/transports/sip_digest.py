"""HTTP digest authentication as SIP uses it (RFC 7616, RFC 2617, RFC 3261 section 22.4): the
challenge a registrar sends (``WWW-Authenticate`` in a 401, ``Proxy-Authenticate`` in a 407)
and the ``Authorization``/``Proxy-Authorization`` answer. Sans-I/O.

Algorithms: MD5, SHA-256 and their ``-sess`` variants; qop ``auth`` (preferred) or
``auth-int``, or none (RFC 2069's plain response) when the challenge offers none.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

_HASHES = {"MD5": "md5", "SHA-256": "sha256"}
_PARAM = re.compile(r'\s*([A-Za-z][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')


class DigestError(ValueError):
    """A challenge that cannot be answered (malformed, or an algorithm or qop we lack)."""


@dataclass(frozen=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"  # as the server spelled it: MD5, MD5-sess, SHA-256, SHA-256-sess
    qop: tuple[str, ...] = ()  # what the server offers: auth, auth-int
    opaque: str | None = None
    stale: bool = False  # the nonce expired, the credentials were right: answer the new one

    def __post_init__(self) -> None:
        if self.algorithm.upper().removesuffix("-SESS") not in _HASHES:
            raise DigestError(f"digest algorithm {self.algorithm} is not supported (MD5 or SHA-256)")
        if self.qop and not {"auth", "auth-int"} & set(self.qop):
            raise DigestError(f"digest qop {','.join(self.qop)} is not supported (auth or auth-int)")


def parse_challenge(value: str) -> Challenge:
    """A ``WWW-Authenticate``/``Proxy-Authenticate`` value: ``Digest realm="...", nonce="..."``."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a digest challenge: {value[:60]!r}")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            raise DigestError(f"malformed digest challenge: {value[:80]!r}")
        raw = match.group(2)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        position = match.end()
    if "realm" not in params or "nonce" not in params:
        raise DigestError("a digest challenge needs a realm and a nonce")
    qop = tuple(item.strip().lower() for item in params.get("qop", "").split(",") if item.strip())
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5"),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def _hash(algorithm: str, text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.new(_HASHES[algorithm.upper().removesuffix("-SESS")], data).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str = "",
    cnonce: str = "",
    qop: str = "",
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 section 3.4.1); ``qop`` empty: RFC 2069's form."""
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}" + (f":{_hash(algorithm, body)}" if qop == "auth-int" else "")
    ha2 = _hash(algorithm, a2)
    if not qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def new_cnonce() -> str:
    return secrets.token_hex(12)


def authorization(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int,
    cnonce: str,
    body: bytes = b"",
) -> str:
    """The ``Authorization`` (or ``Proxy-Authorization``) value answering ``challenge``;
    ``nc`` counts the requests answered with this nonce, from 1."""
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if challenge.qop else "")
    count = f"{nc:08x}"
    response = digest_response(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        nc=count,
        cnonce=cnonce,
        qop=qop,
        body=body,
    )
    parts = [
        f'username="{_quote(username)}"',
        f'realm="{_quote(challenge.realm)}"',
        f'nonce="{_quote(challenge.nonce)}"',
        f'uri="{_quote(uri)}"',
        f'response="{response}"',
        f"algorithm={challenge.algorithm}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={count}", f'cnonce="{_quote(cnonce)}"']
    if challenge.opaque is not None:
        parts.append(f'opaque="{_quote(challenge.opaque)}"')
    return "Digest " + ", ".join(parts)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
