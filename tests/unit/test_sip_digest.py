"""Digest authentication (cosyagent/transports/sip_digest.py) against RFC 7616's worked examples,
and the ``sip.register`` config."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from cosyagent.config import Config, ConfigError, load_config
from cosyagent.transports.sip_digest import (
    Challenge,
    DigestError,
    authorization,
    digest_response,
    parse_challenge,
)

# RFC 7616 section 3.9.1: GET /dir/index.html, user Mufasa, password "Circle of Life".
RFC_REALM = "http-auth@example.org"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"  # the same in both examples


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_worked_examples(algorithm: str, expected: str) -> None:
    header = (
        f'Digest realm="{RFC_REALM}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC_NONCE}", opaque="{RFC_OPAQUE}"'
    )
    challenge = parse_challenge(header)
    assert challenge == Challenge(RFC_REALM, RFC_NONCE, algorithm, ("auth", "auth-int"), RFC_OPAQUE, False)
    value = authorization(
        challenge,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        nc=1,
        cnonce=RFC_CNONCE,
    )
    assert value == (
        f'Digest username="Mufasa", realm="{RFC_REALM}", nonce="{RFC_NONCE}", uri="/dir/index.html", '
        f'response="{expected}", algorithm={algorithm}, qop=auth, nc=00000001, cnonce="{RFC_CNONCE}", '
        f'opaque="{RFC_OPAQUE}"'
    )


def test_rfc2617_example_without_and_with_qop() -> None:
    # RFC 2617 section 3.5: the classic Mufasa example (MD5, qop=auth).
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            nc="00000001",
            cnonce="0a4f113b",
            qop="auth",
        )
        == "6629fae49393a05397450978507c4ef1"
    )
    # No qop (RFC 2069): H(HA1:nonce:HA2), computed here from its definition.
    ha1 = hashlib.md5(b"alice:pbx:secret").hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:pbx.example").hexdigest()
    plain = hashlib.md5(f"{ha1}:n1:{ha2}".encode()).hexdigest()
    challenge = parse_challenge('Digest realm="pbx",nonce="n1"')
    value = authorization(
        challenge, username="alice", password="secret", method="REGISTER", uri="sip:pbx.example", nc=1, cnonce="c"
    )
    assert f'response="{plain}"' in value and "qop=" not in value and "cnonce" not in value


def test_sess_and_auth_int_and_stale() -> None:
    ha1 = hashlib.sha256(b"u:r:p").hexdigest()
    ha1_sess = hashlib.sha256(f"{ha1}:n:c".encode()).hexdigest()
    ha2 = hashlib.sha256(f"REGISTER:sip:x:{hashlib.sha256(b'').hexdigest()}".encode()).hexdigest()
    expected = hashlib.sha256(f"{ha1_sess}:n:00000002:c:auth-int:{ha2}".encode()).hexdigest()
    challenge = parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-256-sess, qop="auth-int", stale=TRUE')
    assert challenge.stale and challenge.algorithm == "SHA-256-sess"
    value = authorization(challenge, username="u", password="p", method="REGISTER", uri="sip:x", nc=2, cnonce="c")
    assert f'response="{expected}"' in value and "qop=auth-int" in value and "nc=00000002" in value


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ('Basic realm="x"', "not a digest challenge"),
        ('Digest realm="x"', "needs a realm and a nonce"),
        ('Digest realm="x", nonce="n", algorithm=SHA-512', "SHA-512 is not supported"),
        ('Digest realm="x", nonce="n", qop="auth-conf"', "qop auth-conf is not supported"),
        ('Digest realm="x" nonce', "malformed digest challenge"),
    ],
)
def test_challenges_that_cannot_be_answered(header: str, error: str) -> None:
    with pytest.raises(DigestError, match=error):
        parse_challenge(header)


def test_quoted_values_with_escapes_and_commas() -> None:
    challenge = parse_challenge('Digest realm="a \\"b\\", c", nonce="x,y", opaque=""')
    assert (challenge.realm, challenge.nonce, challenge.opaque) == ('a "b", c', "x,y", "")
    value = authorization(challenge, username="u", password="p", method="REGISTER", uri="sip:h", nc=1, cnonce="c")
    assert 'realm="a \\"b\\", c"' in value and 'opaque=""' in value


def test_register_config(tmp_path: Path) -> None:
    one = "sip:\n  enabled: true\n  register:\n    registrar: sip:pbx.example:5070\n    username: agent\n"
    config = load_config_text(tmp_path, one, {"COSYAGENT_SIP_PASSWORD": "pw"})
    (entry,) = config.sip.register
    assert (entry.registrar, entry.username, entry.password, entry.expires, entry.transport) == (
        "sip:pbx.example:5070",
        "agent",
        "pw",
        300,
        "udp",
    )
    assert "pw" not in repr(entry)  # a logged config never shows the password
    many = (
        "sip:\n  enabled: true\n  transports: [udp, tcp]\n  register:\n"
        "    - {registrar: 'sip:a', username: u1, password: p1, transport: tcp, expires: 60}\n"
        "    - {registrar: 'sip:b', username: u2, password_env: TRUNK_B}\n"
    )
    config = load_config_text(tmp_path, many, {"TRUNK_B": "p2"})
    assert [(e.registrar, e.password, e.transport) for e in config.sip.register] == [
        ("sip:a", "p1", "tcp"),
        ("sip:b", "p2", "udp"),
    ]
    bad = {
        "registrar: http://x\n    username: u\n    password: p": "registrar must be sip:host",
        "registrar: sip:x\n    username: u": "needs a username and a password (or $COSYAGENT_SIP_PASSWORD)",
        "registrar: sip:x\n    username: u\n    password: p\n    transport: tls": "transport must be udp or tcp",
        "registrar: sip:x\n    username: u\n    password: p\n    transport: tcp": "must be one of sip.transports",
        "registrar: sip:x\n    username: u\n    password: p\n    expires: 5": "expires must be 10-86400",
        "registrar: sip:x\n    username: u\n    password: p\n    contact: mailto:a": "contact must be a sip: URI",
        "registrar: sip:x\n    username: u\n    password: p\n    realm: r": "unknown key(s) in sip.register[0].: realm",
    }
    for body, error in bad.items():
        with pytest.raises(ConfigError, match=re.escape(error)):
            load_config_text(tmp_path, f"sip:\n  register:\n    {body}\n", {})
    with pytest.raises(ConfigError, match=re.escape("sip.register must be a list of mappings")):
        load_config_text(tmp_path, "sip:\n  register: sip:x\n", {})


def load_config_text(tmp_path: Path, text: str, env: dict[str, str]) -> Config:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path, env)
