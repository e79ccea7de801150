"""One rule for every identifier and name (model/identifiers.py): printable (no Unicode
"Other" nor "Separator" character but the ASCII space), NFC-normalized, bounded length.
Checked member by member, against a rule written here from the Unicode categories."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from convtrack.api.tokens import valid_order_id
from convtrack.model import codes
from convtrack.model.event import Envelope
from convtrack.model.identifiers import identifier_text
from convtrack.model.validate import IngestFacts, Rules, validate_event

NOW_US = 1_796_000_000_000_000
FORBIDDEN_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def allowed(char: str) -> bool:
    category = unicodedata.category(char)
    return category not in FORBIDDEN_CATEGORIES and (category != "Zs" or char == " ")


def expected(text: str, limit: int) -> str | None:
    nfc = unicodedata.normalize("NFC", text)
    return nfc if 0 < len(nfc) <= limit and all(allowed(c) for c in nfc) else None


class Member:
    """Where an identifier goes in an event, the error it gets, and where it ends up."""

    def __init__(
        self,
        name: str,
        limit: int,
        place: Callable[[str], dict[str, Any]],
        error: tuple[str, str],
        read: Callable[[Envelope], object],
        query: bool = False,
    ) -> None:
        self.name, self.limit, self.place, self.error, self.read = name, limit, place, error, read
        self.query = query


BASE = {"event_id": "e1", "event_name": "Purchase", "user_id": "u1"}
MEMBERS = [
    Member("event_id", 128, lambda t: {"event_id": t},
           ("event_id", codes.EVENT_ID_INVALID), lambda e: e.event_id),
    Member("?event_id", 128, lambda t: {"event_id": None},
           ("event_id", codes.EVENT_ID_INVALID), lambda e: e.event_id, query=True),
    Member("event_name", 128, lambda t: {"event_name": t},
           ("event_name", codes.EVENT_NAME_INVALID), lambda e: e.event_name),
    Member("user_id", 256, lambda t: {"user_id": t},
           ("user_id", codes.USER_ID_INVALID), lambda e: e.user_id),
    Member("session_id", 256, lambda t: {"session_id": t},
           ("session_id", codes.SESSION_ID_INVALID), lambda e: e.session_id),
    Member("campaign_id", 128, lambda t: {"campaign_id": t},
           ("campaign_id", codes.CAMPAIGN_ID_INVALID), lambda e: e.campaign_id),
    Member("properties.campaign_id", 128, lambda t: {"properties": {"campaign_id": t}},
           ("campaign_id", codes.CAMPAIGN_ID_INVALID), lambda e: e.campaign_id),
    Member("context.campaign.name", 1024, lambda t: {"context": {"campaign": {"name": t}}},
           ("context.campaign", codes.CONTEXT_INVALID), lambda e: e.context["campaign"]["name"]),
    Member("click_ids.gclid", 1024, lambda t: {"click_ids": {"gclid": t}},
           ("click_ids", codes.CLICK_IDS_INVALID), lambda e: e.click_ids["gclid"]),
    Member("context.click_ids.fbclid", 1024,
           lambda t: {"context": {"click_ids": {"fbclid": t}}},
           ("context.click_ids", codes.CLICK_IDS_INVALID), lambda e: e.click_ids["fbclid"]),
]  # fmt: skip


def outcome(member: Member, text: str) -> Envelope | list[tuple[str, str]]:
    body = {k: v for k, v in {**BASE, **member.place(text)}.items() if v is not None}
    facts = IngestFacts(
        source="default",
        key_role="server",
        received_at_us=NOW_US,
        query_event_id=text if member.query else None,
    )
    result = validate_event(body, facts, Rules())
    if isinstance(result, Envelope):
        return result
    return [(e.field, e.code) for e in result]


def check(member: Member, text: str) -> None:
    want = expected(text, member.limit)
    got = outcome(member, text)
    if want is None:
        assert got == [member.error], (member.name, ascii(text))
    else:
        assert isinstance(got, Envelope), (member.name, ascii(text), got)
        assert member.read(got) == want


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
@given(text=st.text(st.characters(), min_size=1, max_size=12))
@hsettings(max_examples=150, deadline=None)
def test_any_text_follows_the_rule(member: Member, text: str) -> None:
    if member.name == "event_name" and not text.strip(" "):
        return  # blank: event_name_missing (below)
    check(member, text)


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
@given(
    before=st.text(st.characters(categories=["L", "N", "P", "S"]), max_size=6),
    bad=st.characters(categories=FORBIDDEN_CATEGORIES) | st.characters(categories=["Zs"]),
    after=st.text(st.characters(categories=["L", "M", "N", "P", "S"]), max_size=6),
)
@hsettings(max_examples=120, deadline=None)
def test_one_forbidden_character_anywhere_refuses(
    member: Member, before: str, bad: str, after: str
) -> None:
    if bad == " ":
        return
    assert outcome(member, before + bad + after) == [member.error], ascii(bad)


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
@given(text=st.text(st.characters(categories=["L", "M", "N", "P", "S", "Zs"]), max_size=12))
@hsettings(max_examples=120, deadline=None)
def test_printable_text_is_kept_in_nfc(member: Member, text: str) -> None:
    text = "x" + "".join(c for c in text if c == " " or unicodedata.category(c) != "Zs")
    nfd = unicodedata.normalize("NFD", text)
    if len(unicodedata.normalize("NFC", nfd)) > member.limit:
        return
    got = outcome(member, nfd)
    assert isinstance(got, Envelope), (member.name, ascii(nfd), got)
    assert member.read(got) == unicodedata.normalize("NFC", nfd)


REPORTED = ["\x00", "\t", "\ufeff", "\u200b", "\u202e", "\U0010ffff", "\x85", "\u2028"]


@pytest.mark.parametrize("char", REPORTED, ids=ascii)
@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
def test_the_reported_characters_are_refused_everywhere(member: Member, char: str) -> None:
    assert outcome(member, f"Pur{char}chase") == [member.error]
    assert outcome(member, char) == [member.error]  # alone: invalid, not missing


def test_blank_event_name_is_missing_not_invalid() -> None:
    for blank in ("", " ", "   "):
        assert outcome(MEMBERS[2], blank) == [("event_name", codes.EVENT_NAME_MISSING)]


def test_length_is_counted_after_normalization() -> None:
    decomposed = "e\u0301" * 128  # 256 code points sent, 128 once composed
    got = outcome(MEMBERS[0], decomposed)
    assert isinstance(got, Envelope) and got.event_id == "\u00e9" * 128
    assert outcome(MEMBERS[0], "\u00e9" * 129) == [("event_id", codes.EVENT_ID_INVALID)]


def test_integers_are_identifiers_as_text_but_not_names() -> None:
    assert identifier_text(42, 128) == "42"
    assert identifier_text(True, 128) is None
    assert identifier_text(42, 128, integers=False) is None
    assert identifier_text(10**200, 128) is None
    assert outcome(MEMBERS[2], 42) == [("event_name", codes.EVENT_NAME_INVALID)]  # type: ignore[arg-type]


@given(text=st.text(st.characters(), min_size=1, max_size=12))
@hsettings(max_examples=200, deadline=None)
def test_order_ids_follow_the_same_rule(text: str) -> None:
    assert valid_order_id(text) == expected(text, 256)
