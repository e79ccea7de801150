"""One rule for every identifier and name an event carries.

``event_id``, ``event_name``, ``user_id``, ``session_id``, ``campaign_id``, the
``context.campaign`` members, click ids and the ``order_id`` of a conversion token
are keys: they are compared, counted, grouped, written to logs and forwarded.
So each must be text a person can read and compare exactly:

- printable: no character of the Unicode categories "Other" (Cc controls such as
  NUL, tab and U+0085; Cf format characters such as the BOM, zero-width spaces and
  joiners, and the bidi overrides U+202A..U+202E and U+2066..U+2069; Cs surrogates;
  Co private use; Cn unassigned, which holds the noncharacters U+FFFE, U+10FFFF and
  U+FDD0..U+FDEF) nor "Separator" (Zl U+2028, Zp U+2029, and Zs spaces other than
  the ASCII space, such as U+00A0). That is exactly ``str.isprintable()``, judged by
  the server's Unicode database;
- normalized to NFC: the same name written composed or decomposed (``é`` as one code
  point or as ``e`` and a combining accent) is one name, stored and answered in NFC.
  Normalizing, rather than refusing, keeps clients that send NFD (macOS text) working;
- of a length bounded per member, counted in code points after normalization.

Integers are taken as their decimal text. ASCII text is already NFC, so the common
case costs two C-level scans (``isascii`` and ``isprintable``) and no normalization.
"""

from __future__ import annotations

import unicodedata


def identifier_text(value: object, limit: int, *, integers: bool = True) -> str | None:
    """The NFC form of ``value`` when it is a non-empty identifier of at most ``limit``
    code points (an integer, when ``integers``, as its decimal text); else None."""
    if type(value) is not str:  # the hot path is a str: one type check for it
        if not integers or type(value) is not int or value.bit_length() > 4 * limit:
            return None  # not text, a bool, or too many digits anyway
        value = str(value)
    text: str = value
    if text.isascii():  # ASCII is NFC already
        return text if 0 < len(text) <= limit and text.isprintable() else None
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text if 0 < len(text) <= limit and text.isprintable() else None


def is_blank(value: object) -> bool:
    """An empty string, or one of ASCII spaces only: a name that was left out."""
    return isinstance(value, str) and not value.strip(" ")
