"""Scrub personal data out of a body before it is kept with the rejects.

A rejected body is kept for review, but it may carry contact data the validation
never got to hash: a ``user`` that is a list or a string, contact values under an
unexpected key, or text that is not JSON at all (truncated, invalid UTF-8). One
rule applies to a decoded body (``scrub_decoded``) and to raw text
(``scrub_unparsed``), so a body reads the same whichever way it failed:

- the value of a contact field (``email``, ``phone``, ``first_name``, ``last_name``,
  ``city``, ``state``, ``zip``, ``external_id``: the ones CONTRACT.md hashes on
  arrival), at any depth and spelled in any case or separator (``firstName``), is
  replaced by its SHA-256 hex digest, whatever its type;
- a ``user`` that is not an object is one digest; in a ``user`` object, only the
  plain fields kept as given on arrival (``client_ip``, ``user_agent``, ``fbc``,
  ``fbp``, ``country``) stay, as strings; every other member's value is a digest,
  and so is the name of a member that is no user field (a broken body may have
  turned a value into a name);
- anything that looks like an email address or a phone number, in any other string
  (keys included), is replaced by its digest.

Raw text is read as the longest prefix that is valid UTF-8 and a valid beginning of
a JSON text: there the structure is known exactly, so the rule applies as it does
to a decoded body, truncated strings and containers included. From the first byte
that breaks the grammar on, the structure is unknown and no scrub can be trusted:
the rest is not kept, only its size, where it began and why, and the SHA-256 of
the whole body (to match repeats), are written after the kept part.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

import msgspec

from convtrack.model.pii import HASHED_FIELDS, PLAIN_FIELDS, is_hashed

# Raw text scanned at most (a reject's body is cut to rejects.max_body_bytes anyway):
# the scan is a Python loop per token, and this bounds its cost per refused request.
MAX_UNPARSED_SCAN_BYTES: Final = 8192

_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def _field_name(key: str) -> str:
    """``First-Name``, ``first_name`` and ``firstName`` are one field: ``firstname``."""
    return _NOT_ALNUM.sub("", key.lower())


_CONTACT = frozenset(_field_name(f) for f in HASHED_FIELDS)
_PLAIN = frozenset(_field_name(f) for f in PLAIN_FIELDS)
_USER_FIELDS = _CONTACT | _PLAIN
_USER = "user"

# Any ``local@domain`` run, a domain without its dot too: a cut body may end inside one.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]*")
# A run of 7 to 15 digits with the separators phone numbers are written with. Not
# part of a longer word, number or dashed id (a UUID's last group), nor a dotted quad.
_PHONE = re.compile(r"(?<![\w.\-])\+?\(?\d[\d ().\-/]{5,24}\d(?![\w\-]|\.\d)")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _phone_digest(match: re.Match[str]) -> str:
    found = match.group(0)
    digits = sum(c.isdigit() for c in found)
    if not 7 <= digits <= 15 or _IPV4.fullmatch(found) or _DATE.fullmatch(found):
        return found
    return _digest(re.sub(r"\D", "", found))


def scrub_text(text: str) -> str:
    """``text`` with email addresses and phone numbers replaced by their digests."""
    if "@" in text:
        text = _EMAIL.sub(lambda m: _digest(m.group(0).lower()), text)
    return _PHONE.sub(_phone_digest, text)


def contact_digest(value: object) -> str:
    """The digest kept for a contact value: a string's as the old rejects had it
    (trimmed, lower case; a digest already stays), anything else of its JSON text."""
    if isinstance(value, str):
        return value if is_hashed(value) else _digest(value.strip().lower())
    return _digest(msgspec.json.encode(value).decode())


# -- decoded bodies ------------------------------------------------------------------


def _scrub_node(node: Any, in_user: bool) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            name = _field_name(key)
            if in_user:
                plain = name in _PLAIN and (value is None or isinstance(value, str))
                member = key if name in _USER_FIELDS else _digest(key)
                out[member] = _scrub_node(value, False) if plain else contact_digest(value)
            elif name in _CONTACT:
                out[key] = contact_digest(value)
            elif name == _USER and isinstance(value, dict):
                out[key] = _scrub_node(value, True)
            elif name == _USER and value is not None:
                out[key] = contact_digest(value)
            else:
                out[scrub_text(key)] = _scrub_node(value, False)
        return out
    if isinstance(node, list):
        return [_scrub_node(item, False) for item in node]
    if isinstance(node, str):
        return scrub_text(node)
    return node


def scrub_decoded(body: object) -> str:
    """The JSON text kept for a decoded (valid JSON) body, scrubbed."""
    try:
        return msgspec.json.encode(_scrub_node(body, False)).decode()
    except RecursionError:  # nested hundreds deep: the text scan keeps no stack of frames
        return scrub_unparsed(msgspec.json.encode(body))


# -- raw text ------------------------------------------------------------------------

_STRING_BODY = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*'
_SPACE = re.compile(r"[ \t\n\r]+")
_TOKEN = re.compile(
    rf'(?P<string>"{_STRING_BODY}")'
    r"|(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<literal>true|false|null)"
    r"|(?P<punct>[{}\[\]:,])"
)
# What the text may end with, cut short: a string (its unfinished escape apart), a
# literal's beginning, a minus sign.
_CUT_STRING = re.compile(rf'"(?P<body>{_STRING_BODY})(?:\\(?:u[0-9a-fA-F]{{0,3}})?)?\Z')
_CUT_SCALAR = re.compile(r"(?:-|t(?:ru?)?|f(?:a(?:ls?)?)?|n(?:ul?)?)\Z")

# What the grammar expects next.
_VALUE, _VALUE_OR_CLOSE, _KEY_OR_CLOSE, _KEY, _COLON, _COMMA_OR_CLOSE, _END = range(7)


class _Broken(Exception):
    """The token does not fit the JSON grammar where it stands."""


class _Token:
    __slots__ = ("complete", "kind", "start", "stop", "text")

    def __init__(self, kind: str, text: str, start: int, stop: int, complete: bool) -> None:
        self.kind, self.text, self.start, self.stop = kind, text, start, stop
        self.complete = complete  # False: a string or scalar the text's end cut short

    def string_value(self) -> str:
        """The text of a string token (of what there is of it, when cut short)."""
        token = self.text
        if "\\" not in token:  # no escape: the text between the quotes
            return token[1:-1] if self.complete else token[1:]
        if not self.complete:
            cut = _CUT_STRING.match(token)
            assert cut is not None
            token = '"' + cut.group("body") + '"'
        try:
            decoded: str = msgspec.json.decode(token.encode("utf-8"))
        except msgspec.DecodeError as exc:  # a lone surrogate escape
            raise _Broken from exc
        return decoded


class _Frame:
    __slots__ = ("in_user", "is_object")

    def __init__(self, is_object: bool, in_user: bool) -> None:
        self.is_object = is_object
        self.in_user = in_user  # the members of a ``user`` object


class _Scan:
    """One pass over the tokens of a JSON prefix, writing the scrubbed text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.out: list[str] = []
        self.stack: list[_Frame] = []
        self.expect = _VALUE
        self.member: str | None = None  # the field name the next value belongs to
        self.hash_from: int | None = None  # start of a value being replaced by its digest
        self.hash_depth = 0
        self.stopped_at = len(text)  # where the grammar broke (len: nowhere)

    def run(self) -> None:
        text, pos, end = self.text, 0, len(self.text)
        while pos < end:
            if text[pos] in " \t\n\r":
                space = _SPACE.match(text, pos)
                assert space is not None
                self._emit(space.group(0))
                pos = space.end()
                continue
            token = self._next(pos)
            try:
                if token is None:
                    raise _Broken
                self._advance(token)
            except _Broken:
                self.stopped_at = pos
                break
            pos = token.stop
        if self.hash_from is not None:  # cut inside a value being hashed: hash what there is
            self.out.append(f'"{_digest(text[self.hash_from : self.stopped_at])}"')

    def _next(self, pos: int) -> _Token | None:
        match = _TOKEN.match(self.text, pos)
        if match is not None:
            kind = match.lastgroup
            assert kind is not None
            return _Token(kind, match.group(0), pos, match.end(), True)
        rest = self.text[pos:]
        if _CUT_STRING.match(rest):
            return _Token("string", rest, pos, len(self.text), False)
        if _CUT_SCALAR.match(rest):
            return _Token("literal", rest, pos, len(self.text), False)
        return None

    def _advance(self, token: _Token) -> None:
        expect, text = self.expect, token.text
        if token.kind == "punct" and text in "}]":
            closes = _KEY_OR_CLOSE if text == "}" else _VALUE_OR_CLOSE
            if not self.stack or self.stack[-1].is_object != (text == "}"):
                raise _Broken
            if expect not in (closes, _COMMA_OR_CLOSE):
                raise _Broken
            self.stack.pop()
            self._emit(text)
            self._value_done(token.stop)
        elif token.kind == "punct" and text == ",":
            if expect != _COMMA_OR_CLOSE:
                raise _Broken
            self._emit(text)
            self.expect = _KEY if self.stack[-1].is_object else _VALUE
        elif token.kind == "punct" and text == ":":
            if expect != _COLON:
                raise _Broken
            self._emit(text)
            self.expect = _VALUE
        elif expect in (_KEY, _KEY_OR_CLOSE):
            if token.kind != "string":
                raise _Broken
            self.member = _field_name(token.string_value())
            frame = self.stack[-1]
            if frame.in_user and self.member not in _USER_FIELDS and self.hash_from is None:
                self._emit(f'"{_digest(token.text)}"')  # a value, maybe, in a key's place
            else:
                self._emit(self._scrubbed(token))
            self.expect = _COLON
        elif expect in (_VALUE, _VALUE_OR_CLOSE):
            self._value(token)
        else:
            raise _Broken

    def _value(self, token: _Token) -> None:
        opening = token.text[0]
        frame = self.stack[-1] if self.stack else None
        member = self.member if frame is not None and frame.is_object else None
        if self.hash_from is None and member is not None and self._hashed(frame, member, opening):
            self.hash_from, self.hash_depth = token.start, len(self.stack)
        if token.kind == "punct":  # { or [
            in_user = opening == "{" and member == _USER and not (frame and frame.in_user)
            self._emit(token.text)
            self.stack.append(_Frame(opening == "{", in_user))
            self.expect = _KEY_OR_CLOSE if opening == "{" else _VALUE_OR_CLOSE
            self.member = None
            return
        self._emit(self._scrubbed(token) if token.kind == "string" else token.text)
        self._value_done(token.stop)

    @staticmethod
    def _hashed(frame: _Frame | None, member: str, opening: str) -> bool:
        """Whether the value of ``member`` that starts with ``opening`` becomes a digest."""
        if frame is not None and frame.in_user:
            return not (member in _PLAIN and opening in ('"', "n"))
        return member in _CONTACT or (member == _USER and opening not in ("{", "n"))

    def _scrubbed(self, token: _Token) -> str:
        """A string token, with any email or phone in it replaced (left open if cut)."""
        if self.hash_from is not None:
            return token.text
        value = token.string_value()
        scrubbed = scrub_text(value)
        if scrubbed == value:
            return token.text
        text = msgspec.json.encode(scrubbed).decode()
        return text if token.complete else text[:-1]

    def _emit(self, text: str) -> None:
        if self.hash_from is None:
            self.out.append(text)

    def _value_done(self, stop: int) -> None:
        if self.hash_from is not None and len(self.stack) == self.hash_depth:
            self.out.append(f'"{_text_digest(self.text[self.hash_from : stop])}"')
            self.hash_from = None
        self.member = None
        self.expect = _COMMA_OR_CLOSE if self.stack else _END


def _text_digest(json_text: str) -> str:
    """The digest of a contact value written as JSON text: for a whole string, the same
    as ``contact_digest`` of its value (one body, one digest, however it failed); for
    anything else, of the text itself."""
    try:
        return contact_digest(msgspec.json.decode(json_text.encode("utf-8")))
    except msgspec.DecodeError:
        return _digest(json_text)


def scrub_unparsed(raw: bytes) -> str:
    """The text kept for a body that is not valid JSON: its longest prefix that is
    valid UTF-8 and valid JSON so far, scrubbed; then, when anything was left out,
    how much, from where, why, and the SHA-256 of the whole body."""
    scanned = raw[:MAX_UNPARSED_SCAN_BYTES]
    why = f"past the first {MAX_UNPARSED_SCAN_BYTES} bytes"
    try:
        text = scanned.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = scanned[: exc.start].decode("utf-8")
        cut_in_a_character = len(raw) > len(scanned) and exc.reason == "unexpected end of data"
        if not cut_in_a_character:
            why = "invalid UTF-8"
    scan = _Scan(text)
    scan.run()
    kept = "".join(scan.out)
    if scan.stopped_at < len(text):
        why = "not JSON"
    kept_bytes = len(text[: scan.stopped_at].encode("utf-8"))
    if kept_bytes == len(raw):
        return kept
    note = (
        f"[convtrack: {len(raw) - kept_bytes} of {len(raw)} bytes not kept, from byte"
        f" {kept_bytes}: {why}; sha256 of the body {hashlib.sha256(raw).hexdigest()}]"
    )
    return f"{kept} {note}" if kept else note
