"""Rejected bodies keep no raw contact data, however malformed: a property test over
bodies carrying contact values in every place and shape (user as an object, a list, a
string, a number, nested; contact keys elsewhere; emails and phones in free text),
serialized and then broken (truncated anywhere, invalid UTF-8 inserted anywhere, a
structural byte overwritten), sent to every ingest path (single, batch; JSON or
text/plain beacon; gzip or not). Whatever the rejects store kept holds none of the
raw values."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convtrack.clock import ManualClock
from convtrack.model.scrub import scrub_decoded, scrub_unparsed
from convtrack.runtime.embedded import Pipeline
from tests.conftest import WRITE_KEY, auth
from tests.support.inprocess import make_pipeline

# Letters that are no hex digit (a digest is hex) and spell no word of the bodies.
LETTERS = "ghjkmnpqrtvwxyz"
words = st.text(LETTERS, min_size=6, max_size=10)
names = words.map(str.capitalize)
emails = st.tuples(words, words, words).map(lambda w: f"{w[0].title()}.{w[1]}@{w[2]}.example")
phone_digits = st.from_regex(r"[2-9][0-9]{9}", fullmatch=True)
phones = st.tuples(phone_digits, st.sampled_from(["+1 ({}) {}-{}", "{}.{}.{}", "+1{}{}{}"])).map(
    lambda p: p[1].format(p[0][:3], p[0][3:6], p[0][6:])
)
zips = st.from_regex(r"[G-Z][0-9][G-Z] ?[0-9][G-Z][0-9]", fullmatch=True)
CONTACT = ["email", "phone", "first_name", "last_name", "city", "state", "zip", "external_id"]
SPELLINGS = {"first_name": ["firstName", "First_Name"], "email": ["Email", "EMAIL"]}


@st.composite
def contact_values(draw: st.DrawFn) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(CONTACT), min_size=1, max_size=8, unique=True))
    out: dict[str, Any] = {}
    for field in chosen:
        if field == "email":
            out[field] = draw(emails)
        elif field == "phone":
            out[field] = draw(phones | phone_digits.map(int))
        elif field == "zip":
            out[field] = draw(zips)
        else:
            out[field] = draw(names)
    return out


def raw_forms(contact: dict[str, Any], whole_only: bool) -> list[str]:
    """The texts that must not be kept: each value's beginning (what a cut leaves),
    as written in the body and normalized (lower case, phone digits only). In free
    text, the beginning of an email cut before its '@' is just a word: there only
    whole values count."""
    forms = []
    for value in contact.values():
        text = str(value)
        digits = re.sub(r"\D", "", text)
        if whole_only:
            forms.append(text.lower())
            if len(digits) >= 10:
                forms.append(digits)
        elif len(digits) >= 10:
            forms.append(digits[:8])
            forms.append(text[: max(8, len(text) - 4)].lower())
        else:
            forms.append(text[:5].lower())
    return forms


@st.composite
def user_places(draw: st.DrawFn, contact: dict[str, Any]) -> dict[str, Any]:
    """Where the event carries the contact values, in one of the shapes clients send."""
    shape = draw(st.sampled_from(
        ["object", "list", "string", "number", "nested", "spelled", "elsewhere", "free_text"]
    ))  # fmt: skip
    values = list(contact.values())
    if shape == "object":
        return {"user": {**contact, "client_ip": "203.0.113.9"}}
    if shape == "list":
        return {"user": values}
    if shape == "string":
        return {"user": str(values[0])}
    if shape == "number":
        digits = re.sub(r"\D", "", str(contact.get("phone", ""))) or "5558675309"
        return {"user": int(digits), "properties": {"user": values}}
    if shape == "nested":
        return {"user": {k: {"value": v, "again": [v]} for k, v in contact.items()}}
    if shape == "spelled":
        return {
            "user": {draw(st.sampled_from(SPELLINGS.get(k, [k]))): v for k, v in contact.items()}
        }
    if shape == "elsewhere":
        return {**contact, "properties": {"shipping": dict(contact)}}
    # Emails and phones in free text (names in free text cannot be recognized).
    text_values = [str(v) for k, v in contact.items() if k in ("email", "phone")]
    return {"user": {"email": "x"}, "properties": {"note": " or ".join(text_values)}}


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str, list[str]]:
    contact = draw(contact_values())
    event: dict[str, Any] = {"event_id": "pii-prop", "event_name": "Purchase", "user_id": "u1"}
    event.update(draw(user_places(contact)))
    free_text = "note" in event.get("properties", {})
    if free_text:
        contact = {k: v for k, v in contact.items() if k in ("email", "phone")}
    if draw(st.booleans()):
        event["currency"] = "usd"  # one more reason to refuse it
    if draw(st.booleans()):
        path = "/v1/batch"
        items: list[Any] = [event] * draw(st.integers(1, 3))
        body: Any = {"batch": items}
    else:
        path = "/v1/track"
        body = event
    text = json.dumps(
        body, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1]))
    )
    raw = text.encode()
    for _ in range(draw(st.integers(0, 2))):
        breakage = draw(st.sampled_from(["cut", "invalid_utf8", "overwrite"]))
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        if breakage == "cut":
            raw = raw[:at]
        elif breakage == "invalid_utf8":
            junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"]))
            raw = raw[:at] + junk + raw[at:]
        else:
            # A structural byte overwritten. (A letter changed inside a member name,
            # "user" into "{ser", would make a body whose contact values are no longer
            # labelled as such: no scrub can tell them from any other text.)
            structural = [i for i, byte in enumerate(raw) if byte in b'{}[]:,"']
            if structural:
                at = draw(st.sampled_from(structural))
                junk = draw(
                    st.sampled_from([b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"\x00"])
                )
                raw = raw[:at] + junk + raw[at + 1 :]
    return raw, path, raw_forms(contact, whole_only=free_text)


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    with tempfile.TemporaryDirectory() as tmp:
        built = make_pipeline(Path(tmp), ManualClock(), limits={"user_events_per_sec": 0})
        yield built
        built.close()


def post(pipeline: Pipeline, path: str, raw: bytes, content_type: str, gzipped: bool) -> int:
    headers = {**auth(WRITE_KEY), "Content-Type": content_type}
    if gzipped:
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"

    async def go() -> int:
        transport = httpx.ASGITransport(app=pipeline.app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.post(path, content=raw, headers=headers)).status_code

    return asyncio.run(go())


_DIGEST = re.compile(r"[0-9a-f]{64}")


def leaks(kept: str, forms: list[str]) -> list[str]:
    text = _DIGEST.sub("#", kept).lower()
    return [form for form in forms if form in text]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=bodies(),
    content_type=st.sampled_from(["application/json", "text/plain", "text/plain;charset=UTF-8"]),
    gzipped=st.booleans(),
)
def test_kept_rejects_hold_no_raw_contact_value(
    pipeline: Pipeline, body: tuple[bytes, str, list[str]], content_type: str, gzipped: bool
) -> None:
    raw, path, forms = body
    newest = pipeline.rejects.page(code=None, limit=1, before_id=None).items
    after = newest[0].id if newest else 0
    status = post(pipeline, path, raw, content_type, gzipped)
    assert status in (200, 202, 400), status
    for reject in pipeline.rejects.since(after, 1000):
        assert not leaks(reject.body, forms), (raw, reject.body)


@given(raw=st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_any_bytes_scrub_without_error(raw: bytes) -> None:
    kept = scrub_unparsed(raw)
    if "[convtrack: " not in kept:  # kept whole: it was valid UTF-8, the beginning of JSON
        raw.decode("utf-8")


def test_the_reported_bodies_are_scrubbed() -> None:
    truncated = (
        b'{"event_name":"Purchase","user_id":"u1","user":{"email":"a@b.co",'
        b'"phone":"+1 555 867 5309","first_name":"Zorbalina","city":"Frobnitzville"'
    )
    for raw in (truncated, truncated[:-3], truncated.replace(b"Purchase", b"Pur\xffchase")):
        kept = scrub_unparsed(raw)
        assert not leaks(kept, ["5558675309", "555 867", "zorbalina", "frobnitz", "a@b.co"])
    listed = scrub_decoded({"event_name": "Purchase", "user": ["alice@example.com"]})
    assert "alice" not in listed and "example.com" not in listed
    assert json.loads(listed)["event_name"] == "Purchase"


def test_a_decoded_body_keeps_its_plain_user_fields_and_hashes_as_on_arrival() -> None:
    user = {"email": " Jane.Doe@Example.com ", "country": "us", "client_ip": "203.0.113.9",
            "ssn": "078-05-1120"}  # fmt: skip
    kept = json.loads(scrub_decoded({"user": user}))
    assert kept["user"]["email"] == (
        "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
    )  # the accepted event's own digest of it
    assert kept["user"]["country"] == "us" and kept["user"]["client_ip"] == "203.0.113.9"
    assert "ssn" not in kept["user"] and "078" not in json.dumps(kept)  # no user field: both hashed


def test_one_body_gets_one_digest_whether_it_decoded_or_not() -> None:
    body = {"event_name": "Purchase", "user": {"first_name": "Zorbalina", "zip": "K1A 0B1"}}
    text = json.dumps(body)
    assert scrub_unparsed(text.encode()) == json.dumps(json.loads(scrub_decoded(body)))


EVERY_SHAPE = {
    "event_name": "Purchase",
    "user": {"email": "Zqxv.Wkrt@Mhjn.example", "phone": "+1 (555) 867-5309",
             "first_name": "Zorqvist", "city": "Frwynzk", "client_ip": "203.0.113.9"},
    "properties": {"user": ["Kwyxzt", 15558675309], "firstName": {"deep": ["Trzmkv"]}},
    "batch": [{"user": "Pqrxwm"}, {"User": {"Zip": 12345678}}],
}  # fmt: skip
EVERY_SHAPE_FORMS = ["zqxv.", "55586", "zorqv", "frwyn", "kwyxz", "trzmk", "pqrxw", "12345"]


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_every_cut_of_a_body_keeps_no_raw_value(ensure_ascii: bool) -> None:
    raw = json.dumps(EVERY_SHAPE, ensure_ascii=ensure_ascii, indent=1).encode()
    assert leaks(raw.decode(), EVERY_SHAPE_FORMS) == EVERY_SHAPE_FORMS
    for cut in range(len(raw) + 1):
        for broken in (raw[:cut], raw[:cut] + b"\xff" + raw[cut:], raw[:cut] + b"}" + raw[cut:]):
            kept = scrub_unparsed(broken)
            assert not leaks(kept, EVERY_SHAPE_FORMS), (broken, kept)
    assert "203.0.113.9" in scrub_unparsed(raw)  # a plain user field stays


def test_a_body_nested_hundreds_deep_is_scrubbed_too() -> None:
    """As deep as the decoder takes: deeper than the structural walk can recurse."""
    depth = 900
    while True:
        raw = b"[" * depth + b'{"user": ["alice@example.com"]}' + b"]" * depth
        try:
            deep = msgspec.json.decode(raw)
            break
        except RecursionError:
            depth -= 50
    assert depth >= 500
    kept = scrub_decoded(deep)
    assert "alice" not in kept and kept.startswith("[[[")
