"""Conversion tokens end to end: issued by a real ``convtrack serve``, checked on ingest."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from convtrack.model.timeparse import parse_timestamp_us
from convtrack.model.tokens import issue_token, read_claims
from tests.conftest import (
    ADMIN_KEY,
    SERVER_KEY,
    WRITE_KEY,
    ServerFactory,
    ServerProcess,
    auth,
    logged_event_ids,
)

pytestmark = pytest.mark.slow

SECRET_A = "token_secret_a_0123456789abcdef0123456789"
SECRET_B = "token_secret_b_0123456789abcdef0123456789"


def purchase(token: str, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_name": "Purchase",
        "user_id": "u_123",
        "value": 4999,
        "currency": "USD",
        "conversion_token": token,
    }
    body.update(kw)
    return body


def issue(
    server: ServerProcess, order_id: Any = "ord_1001", key: str = SERVER_KEY
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/conversion-tokens",
        json={"order_id": order_id},
        headers=auth(key),
        timeout=10,
    )


def token_of(server: ServerProcess, order_id: str = "ord_1001") -> str:
    response = issue(server, order_id)
    assert response.status_code == 200, response.text
    token: str = response.json()["conversion_token"]
    return token


def track(server: ServerProcess, body: dict[str, Any], key: str = WRITE_KEY) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/track", json=body, headers=auth(key), timeout=10)


def error_codes(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "validation_failed"
    return [e["code"] for e in body["errors"]]


def stored_secret(server: ServerProcess) -> bytes:
    return (server.data_dir / "token-secret").read_bytes().strip()


def test_issue_and_use_a_token(server: ServerProcess) -> None:
    before_us = time.time_ns() // 1000
    response = issue(server)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"conversion_token", "expires_at"}
    token = body["conversion_token"]
    assert token.startswith("ct1.")
    claims = read_claims(token)
    assert claims is not None and claims.order_id == "ord_1001" and claims.source == "default"
    expires_us = parse_timestamp_us(body["expires_at"])
    assert body["expires_at"].endswith("Z")
    assert expires_us == claims.expires_at_us  # RFC 3339 with ms is the exact expiry
    week_us = 604_800 * 1_000_000
    assert before_us + week_us - 2_000_000 <= expires_us <= time.time_ns() // 1000 + week_us

    event = purchase(token)
    accepted = track(server, event)
    assert accepted.status_code == 202
    assert accepted.json() == {"status": "accepted", "event_id": event["event_id"]}
    # Any key of the same source may send it: a server key, in a batch.
    batch = httpx.post(
        f"{server.url}/v1/batch",
        json={"batch": [purchase(token, event_id="b-1"), purchase(token + "x", event_id="b-2")]},
        headers=auth(SERVER_KEY),
        timeout=10,
    ).json()
    assert batch["accepted"] == 1
    assert batch["rejected"][0]["errors"][0]["code"] == "conversion_token_invalid"
    assert logged_event_ids(server.data_dir) == [event["event_id"], "b-1"]


def test_admin_key_may_issue_write_key_may_not(server: ServerProcess) -> None:
    assert issue(server, key=ADMIN_KEY).status_code == 200
    refused = issue(server, key=WRITE_KEY)
    assert (refused.status_code, refused.json()) == (403, {"error": "role_not_allowed"})
    missing = httpx.post(f"{server.url}/v1/conversion-tokens", json={"order_id": "o"})
    assert missing.status_code == 401
    wrong_method = httpx.get(f"{server.url}/v1/conversion-tokens", headers=auth(SERVER_KEY))
    assert wrong_method.status_code == 405


def test_bad_order_id_and_bodies(server: ServerProcess) -> None:
    for order_id in ("", None, 42, "a" * 257, "line\nbreak", ["o"]):
        response = issue(server, order_id)
        assert error_codes(response) == ["order_id_invalid"], order_id
        assert response.json()["errors"][0]["field"] == "order_id"
    assert issue(server, "a" * 256).status_code == 200
    url = f"{server.url}/v1/conversion-tokens"
    headers = {**auth(SERVER_KEY), "Content-Type": "application/json"}
    assert error_codes(httpx.post(url, content=b"{nope", headers=headers)) == ["json_invalid"]
    assert error_codes(httpx.post(url, content=b"", headers=headers)) == ["body_empty"]
    assert error_codes(httpx.post(url, content=b'["o"]', headers=headers)) == ["body_not_object"]
    form = httpx.post(
        url,
        content=b"order_id=o",
        headers={**auth(SERVER_KEY), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    huge = httpx.post(url, json={"order_id": "o", "pad": "x" * 10_000}, headers=auth(SERVER_KEY))
    assert huge.status_code == 413


def test_tampered_token_is_rejected_and_kept(server: ServerProcess) -> None:
    token = token_of(server)
    prefix, payload, signature = token.split(".")
    flipped = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:]
    tampered = f"{prefix}.{flipped}.{signature}"
    response = track(server, purchase(tampered, event_id="tampered-1"))
    assert error_codes(response) == ["conversion_token_invalid"]
    assert response.json()["errors"][0]["field"] == "conversion_token"
    rejects = httpx.get(
        f"{server.url}/v1/rejects",
        params={"code": "conversion_token_invalid"},
        headers=auth(ADMIN_KEY),
    ).json()
    assert rejects["total"] == 1
    assert rejects["items"][0]["event_id"] == "tampered-1"
    assert tampered in rejects["items"][0]["body"]
    assert logged_event_ids(server.data_dir) == []


def test_forged_token_signed_with_another_secret(server: ServerProcess) -> None:
    now_us = time.time_ns() // 1000
    forged = issue_token(b"not-the-server-secret-0123456789", "ord_1", "default", now_us, 600)
    assert error_codes(track(server, purchase(forged.token))) == ["conversion_token_invalid"]
    garbage = track(server, purchase("ct1.not.a-token"))
    assert error_codes(garbage) == ["conversion_token_invalid"]
    # The genuine article, signed with the server's own secret, passes.
    genuine = issue_token(stored_secret(server), "ord_1", "default", now_us, 600)
    assert track(server, purchase(genuine.token)).status_code == 202


def test_expired_token_is_rejected(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_TOKENS_TTL_SECS": "60"})
    server.start()
    issued = issue(server).json()
    expires_in = parse_timestamp_us(issued["expires_at"]) or 0
    assert 55_000_000 <= expires_in - time.time_ns() // 1000 <= 60_000_000
    # A token whose claims expired 60 s ago: issued two minutes ago with the 60 s TTL.
    past_us = time.time_ns() // 1000 - 120_000_000
    expired = issue_token(stored_secret(server), "ord_old", "default", past_us, 60)
    assert error_codes(track(server, purchase(expired.token))) == ["conversion_token_invalid"]
    assert track(server, purchase(issued["conversion_token"])).status_code == 202


def test_ttl_setting_is_checked(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_TOKENS_TTL_SECS": "59"})
    with pytest.raises(RuntimeError, match="CONVTRACK_TOKENS_TTL_SECS"):
        server.start()


def test_secret_file_is_private_and_survives_restart(server_factory: ServerFactory) -> None:
    server = server_factory()
    server.start()
    path = server.data_dir / "token-secret"
    assert path.stat().st_mode & 0o777 == 0o600
    secret = stored_secret(server)
    assert len(secret) >= 32
    token = token_of(server)
    assert server.terminate() == 0
    server.start()
    assert stored_secret(server) == secret
    assert track(server, purchase(token)).status_code == 202
    assert secret.decode() not in server.log_path.read_text()


def test_secret_from_environment_and_rotation(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_TOKEN_SECRET": SECRET_A})
    server.start()
    assert not (server.data_dir / "token-secret").exists()
    old_token = token_of(server, "ord_a")
    assert server.terminate() == 0

    # Rotate: B signs, A still verifies.
    server.env.update(
        {"CONVTRACK_TOKEN_SECRET": SECRET_B, "CONVTRACK_TOKEN_SECRET_PREVIOUS": SECRET_A}
    )
    server.start()
    new_token = token_of(server, "ord_b")
    assert track(server, purchase(old_token)).status_code == 202
    assert track(server, purchase(new_token)).status_code == 202
    assert server.terminate() == 0

    # A retired: its tokens are refused, B's still pass.
    del server.env["CONVTRACK_TOKEN_SECRET_PREVIOUS"]
    server.start()
    assert error_codes(track(server, purchase(old_token))) == ["conversion_token_invalid"]
    assert track(server, purchase(new_token)).status_code == 202
    assert server.terminate() == 0

    # A token is bound to the source of the key that asked for it.
    server.env["CONVTRACK_COLLECT_SOURCE"] = "shop2"
    server.start()
    assert error_codes(track(server, purchase(new_token))) == ["conversion_token_invalid"]
    claims = read_claims(token_of(server, "ord_c"))
    assert claims is not None and claims.source == "shop2"


def test_short_secret_from_environment_is_refused(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_TOKEN_SECRET": "too-short"})
    with pytest.raises(RuntimeError, match="CONVTRACK_TOKEN_SECRET"):
        server.start()
