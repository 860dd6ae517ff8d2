"""A real OAuth2 client library (requests-oauthlib, RFC 6749 password grant through
oauthlib's LegacyApplicationClient) against joinery's POST /oauth/token.

What it shows: the library gets a token with the installer password, calls the API with
it, and refreshes it; refresh tokens rotate, and presenting a spent one is refused and
revokes the whole family, so the newer refresh token stops working too. A token asked
for with scope "read" lists nodes but gets 403 insufficient_scope on a write endpoint.
"""

import pytest
import requests
from oauthlib.oauth2 import InvalidGrantError, LegacyApplicationClient
from requests_oauthlib import OAuth2Session

from conftest import PASSWORD, Daemon, Fake

CLIENT_ID = "joinery-tests"  # public client: any id is accepted, no secret


@pytest.fixture(scope="module")
def daemon():
    fake = Fake(nodes=3)
    d = Daemon(fake)
    yield d
    d.stop()
    fake.stop()


def session(daemon, scope=None):
    return OAuth2Session(client=LegacyApplicationClient(client_id=CLIENT_ID), scope=scope)


def login(daemon, scope=None):
    s = session(daemon, scope)
    extra = {"scope": scope} if scope else {}
    token = s.fetch_token(
        token_url=daemon.url + "/oauth/token",
        username="admin",
        password=PASSWORD,
        client_id=CLIENT_ID,
        verify=daemon.ca,
        **extra,
    )
    return s, token


def refresh(daemon, s, refresh_token):
    return s.refresh_token(
        daemon.url + "/oauth/token",
        refresh_token=refresh_token,
        client_id=CLIENT_ID,
        verify=daemon.ca,
    )


def test_password_grant_then_refresh(daemon):
    s, token = login(daemon)
    assert token["token_type"] == "Bearer"
    assert token["scope"] == ["admin"]
    assert 0 < token["expires_in"] <= 3600
    r = s.get(daemon.url + "/v1/nodes", verify=daemon.ca)
    assert r.status_code == 200, r.text
    assert len(r.json()["nodes"]) == 3

    fresh = refresh(daemon, s, token["refresh_token"])
    assert fresh["refresh_token"] != token["refresh_token"]
    assert fresh["access_token"] != token["access_token"]
    # The session now uses the new access token.
    assert s.get(daemon.url + "/v1/nodes", verify=daemon.ca).status_code == 200
    # And the new refresh token works once more.
    again = refresh(daemon, s, fresh["refresh_token"])
    assert again["refresh_token"] not in (fresh["refresh_token"], token["refresh_token"])


def test_reusing_a_rotated_refresh_token_revokes_the_family(daemon):
    s, token = login(daemon)
    first = token["refresh_token"]
    second = refresh(daemon, s, first)["refresh_token"]
    # The spent token is refused...
    with pytest.raises(InvalidGrantError):
        refresh(daemon, s, first)
    # ...and that revoked every token of the login, the newer one included.
    with pytest.raises(InvalidGrantError):
        refresh(daemon, s, second)
    # Other logins are untouched.
    s2, token2 = login(daemon)
    assert refresh(daemon, s2, token2["refresh_token"])["access_token"]


def test_read_scope_reads_and_cannot_write(daemon):
    s, token = login(daemon, scope=["read"])
    assert token["scope"] == ["read"]
    assert s.get(daemon.url + "/v1/nodes", verify=daemon.ca).status_code == 200
    r = s.post(daemon.url + "/v1/create-join-command", json={}, verify=daemon.ca)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "insufficient_scope"
    # A refresh cannot widen the scope.
    r = requests.post(
        daemon.url + "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"],
              "scope": "admin"},
        verify=daemon.ca,
        timeout=30,
    )
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_scope"
    assert r.headers["Cache-Control"] == "no-store"


def test_wrong_password_is_invalid_grant(daemon):
    s = session(daemon)
    with pytest.raises(InvalidGrantError):
        s.fetch_token(
            token_url=daemon.url + "/oauth/token",
            username="admin",
            password="not the password",
            client_id=CLIENT_ID,
            verify=daemon.ca,
        )
