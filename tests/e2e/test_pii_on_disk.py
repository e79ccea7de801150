"""Raw contact values never reach the disk: not in the log, the hot store, the rejects,
the dead letters, the lake (decoded, not just its compressed bytes) or the server's logs."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from convtrack.testing.standins.base import Answer, Request, StandIn
from tests.conftest import ADMIN_KEY, WRITE_KEY, ServerFactory, auth

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()

USER = {
    "email": "  Zorbalina.Quexworth@Example.com ",
    "phone": "+1 (555) 867-5309",
    "first_name": "Zorbalina",
    "last_name": "Quexworth",
    "city": "Frobnitzville",
    "state": "Wyomingtonia",
    "zip": "K1A0B1",
    "external_id": "cust-xq-77341",
}
# Every form a raw value could take once normalized, in any letter case.
RAW_FORMS = [
    "zorbalina.quexworth@example.com",
    "zorbalina",
    "quexworth",
    "15558675309",
    "555) 867",
    "frobnitzville",
    "wyomingtonia",
    "k1a0b1",
    "cust-xq-77341",
]


class RefusingHook(StandIn):
    """A webhook receiver that refuses everything, so the events become dead letters."""

    def check(self, request: Request) -> Answer:
        return Answer(400, {}, b'{"error":"no thanks"}')


def raw_found(data: bytes) -> list[str]:
    text = data.decode("utf-8", errors="replace").lower()
    return [form for form in RAW_FORMS if form in text]


def parquet_text(path: Path) -> bytes:
    table = pq.read_table(path)
    return str(table.to_pylist()).encode()


def test_raw_contact_values_are_nowhere_on_disk(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    hook = RefusingHook()
    config = tmp_path / "convtrack.toml"
    config.write_text(
        "[[destinations]]\n"
        'kind = "webhook"\nname = "crm"\n'
        f'endpoint = "{hook.base_url}/hook"\nsecret_env = "HOOK_SECRET"\n'
        "batch_max_wait_secs = 0\n"
    )
    server = server_factory(
        {"HOOK_SECRET": SECRET, "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "1000"},
        args=["--config", str(config)],
    )
    server.start()
    try:
        good = {"event_id": "pii-1", "event_name": "Purchase", "user_id": "u1",
                "value": 4999, "currency": "USD", "user": USER}  # fmt: skip
        bad = {**good, "event_id": "pii-2", "currency": "usd"}  # rejected, kept with rejects
        ok = httpx.post(server.url + "/v1/track", json=good, headers=auth(WRITE_KEY))
        assert ok.status_code == 202, ok.text
        rejected = httpx.post(server.url + "/v1/track", json=bad, headers=auth(WRITE_KEY))
        assert rejected.status_code == 400
        deadline = time.monotonic() + 20
        while True:
            answer = httpx.get(server.url + "/v1/dead-letters", headers=auth(ADMIN_KEY))
            if answer.json()["total"] >= 1:
                break
            assert time.monotonic() < deadline, "the refused event never became a dead letter"
            time.sleep(0.1)
        assert server.terminate() == 0  # flushes the lake
    finally:
        hook.close()

    assert hook.requests, "the destination was never called"
    assert not raw_found(b"".join(r.body for r in hook.requests)), "raw PII was forwarded"
    files = [p for p in server.data_dir.rglob("*") if p.is_file()]
    lake_files = [p for p in files if p.suffix == ".parquet"]
    assert lake_files, "the lake has no files to check"
    leaks = {}
    for path in files:
        content = parquet_text(path) if path.suffix == ".parquet" else path.read_bytes()
        found = raw_found(content)
        if found:
            leaks[str(path.relative_to(server.data_dir))] = found
    found_in_log = raw_found(server.log_path.read_bytes())
    assert not leaks, f"raw contact values on disk: {leaks}"
    assert not found_in_log, f"raw contact values in the server log: {found_in_log}"
