"""Cross-check a running joinery daemon's session tokens with PyJWT, an independent JWT library.

What it shows: a token from POST /v1/auth/token is a standard HS256 JWT that PyJWT accepts
with the daemon's signing key (audience and issuer "joinery", subject and scope "admin",
valid 24 hours), and three tampered copies (payload changed, signature changed, alg
switched to "none") are refused both by PyJWT and by the daemon (401 on GET /v1/nodes).

The daemon is the real binary on the fake Kubernetes API server (see conftest.py), started
with --signing-key-file so the test holds the key PyJWT needs.
"""

import base64
import binascii
import json
import os
import ssl
import urllib.error
import urllib.request

import jwt
import pytest

from conftest import PASSWORD, Daemon, Fake

AUDIENCE = "joinery"
ISSUER = "joinery"
SESSION_SECONDS = 86400
TIMEOUT_SECONDS = 30


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def read_signing_key(path: str) -> bytes:
    """The same two formats the daemon accepts (src/auth/key.rs)."""
    with open(path, "rb") as f:
        raw = f.read(4097)
    if len(raw) == 32:
        return raw
    try:
        text = raw.decode("ascii").strip()
        text = text.replace("-", "+").replace("_", "/")
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (UnicodeDecodeError, binascii.Error):
        key = b""
    if len(key) != 32:
        pytest.fail(f"{path}: expected 32 raw bytes or base64 text of 32 bytes")
    return key


@pytest.fixture(scope="module")
def env():
    """A daemon on the fake cluster, started with a signing key file the test also reads."""
    fake = Fake(nodes=2)
    key_file = os.path.join(fake.dir, "signing.key")
    with open(key_file, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    daemon = Daemon(fake, extra=["--signing-key-file", key_file])
    yield {
        "url": daemon.url,
        "tls": ssl.create_default_context(cafile=daemon.ca),
        "password": PASSWORD,
        "key": read_signing_key(key_file),
    }
    daemon.stop()
    fake.stop()


def call(env, method, path, token=None, body=None):
    """(status, body bytes) of one HTTPS request; error statuses are returned, not raised."""
    headers = {}
    data = None
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    request = urllib.request.Request(env["url"] + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, context=env["tls"], timeout=TIMEOUT_SECONDS) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def token(env):
    status, body = call(env, "POST", "/v1/auth/token", body={"password": env["password"]})
    assert status == 200, f"POST /v1/auth/token answered {status}: {body[:200]!r}"
    token = json.loads(body)["token"]
    assert isinstance(token, str) and token.count(".") == 2, "the answer holds no compact JWT"
    return token


def decode(env, token):
    return jwt.decode(
        token,
        env["key"],
        algorithms=["HS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]},
    )


def test_session_token_verifies_with_pyjwt(env, token):
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = decode(env, token)
    assert claims["sub"] == "admin"
    assert claims["scope"] == "admin"
    assert claims["exp"] - claims["iat"] == SESSION_SECONDS
    assert claims["nbf"] <= claims["iat"] + 60
    assert isinstance(claims["jti"], str) and claims["jti"]


def test_session_token_is_accepted_by_the_daemon(env, token):
    # The control for the 401s below: the same request with the real token succeeds.
    status, body = call(env, "GET", "/v1/nodes", token=token)
    assert status == 200, f"GET /v1/nodes with the issued token answered {status}: {body[:200]!r}"


def tamper_payload(token):
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["sub"] = "mallory"
    claims["exp"] += 365 * 86400
    return ".".join([header, b64url(json.dumps(claims, separators=(",", ":")).encode()), signature])


def tamper_signature(token):
    header, payload, signature = token.split(".")
    sig = bytearray(b64url_decode(signature))
    sig[0] ^= 0x01
    return ".".join([header, payload, b64url(bytes(sig))])


def alg_none(token):
    _, payload, _ = token.split(".")
    return ".".join([b64url(b'{"alg":"none","typ":"JWT"}'), payload, ""])


TAMPERINGS = [
    (tamper_payload, jwt.InvalidSignatureError),
    (tamper_signature, jwt.InvalidSignatureError),
    (alg_none, jwt.InvalidAlgorithmError),
]


@pytest.mark.parametrize(("tamper", "pyjwt_error"), TAMPERINGS, ids=lambda t: getattr(t, "__name__", ""))
def test_tampered_token_is_refused(env, token, tamper, pyjwt_error):
    forged = tamper(token)
    assert forged != token
    with pytest.raises(pyjwt_error):
        decode(env, forged)
    status, body = call(env, "GET", "/v1/nodes", token=forged)
    assert status == 401, f"GET /v1/nodes with a forged token answered {status}: {body[:200]!r}"
