"""Normalize and SHA-256 hash user contact fields on arrival.

Platforms disagree on normalization (phone with or without '+', Google's
Gmail dot rule, punctuation in names), and raw values are never kept, so
every variant a destination may need is hashed here, once. Values that
already look like a SHA-256 hex digest pass through unchanged.
See shared/reference/destinations.md section 7.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable

HASHED_FIELDS = frozenset(
    {"email", "phone", "first_name", "last_name", "city", "state", "zip", "external_id"}
)
PLAIN_FIELDS = frozenset({"client_ip", "user_agent", "fbc", "fbp", "country"})
USER_FIELDS = HASHED_FIELDS | PLAIN_FIELDS

_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_PUNCT = str.maketrans("", "", string.punctuation)
_NOT_LETTERS = re.compile(r"[^a-z]")
_NOT_DIGITS = re.compile(r"\D")
_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_hashed(value: str) -> bool:
    return _HEX64.fullmatch(value) is not None


def normalize_email(value: str) -> str:
    return value.strip().lower()


def normalize_email_google(value: str) -> str:
    """Google's documented rule: drop '.' in the local part of Gmail addresses only."""
    email = normalize_email(value)
    local, at, domain = email.partition("@")
    if at and domain in _GMAIL_DOMAINS:
        return local.replace(".", "") + "@" + domain
    return email


def normalize_email_google_sdk(value: str) -> str:
    """google-ads-python's example (v23): drop every '.' and '+' in the local part, any domain.

    Its docstring still describes the Gmail-only rule; destinations.md section 7
    calls this a discrepancy, so it is a separate variant a destination may pick.
    """
    email = normalize_email(value)
    local, at, domain = email.partition("@")
    if not at:
        return email
    return local.replace(".", "").replace("+", "") + "@" + domain


def normalize_phone_digits(value: str) -> str:
    """Meta: digits only with country code, no '+', no leading '00' or '0'."""
    digits = _NOT_DIGITS.sub("", value.strip())
    for _ in range(2):
        if digits.startswith("0"):
            digits = digits[1:]
    return digits


def normalize_phone_e164(value: str) -> str:
    """Google and TikTok: E.164 with the '+'."""
    return "+" + normalize_phone_digits(value)


def normalize_name(value: str) -> str:
    """Meta: trim, lowercase, drop punctuation."""
    return value.strip().lower().translate(_PUNCT).strip()


def normalize_name_plain(value: str) -> str:
    """Google and TikTok: trim and lowercase only."""
    return value.strip().lower()


def normalize_city_state(value: str) -> str:
    return _NOT_LETTERS.sub("", value.strip().lower())


def normalize_zip(value: str) -> str:
    return value.strip().lower().split("-", 1)[0].replace(" ", "")


def normalize_external_id(value: str) -> str:
    return value.strip().lower()


def _hash(value: str, normalize: Callable[[str], str]) -> str:
    if is_hashed(value):
        return value
    return sha256_hex(normalize(value))


def hash_user(user: dict[str, str]) -> dict[str, str]:
    """Return the stored form of a ``user`` object: hashes and the never-hashed fields.

    Keys of the result: ``email``, ``email_google``, ``email_google_sdk``,
    ``phone``, ``phone_e164``, ``first_name``, ``first_name_plain``, ``last_name``,
    ``last_name_plain``, ``city``, ``state``, ``zip``, ``external_id`` (hex SHA-256), and
    ``country`` (ISO alpha-2 upper case), ``client_ip``, ``user_agent``,
    ``fbc``, ``fbp`` as given.
    """
    out: dict[str, str] = {}
    for field, raw in user.items():
        value = raw.strip()
        if not value:
            continue
        if field == "email":
            out["email"] = _hash(value, normalize_email)
            out["email_google"] = _hash(value, normalize_email_google)
            out["email_google_sdk"] = _hash(value, normalize_email_google_sdk)
        elif field == "phone":
            if is_hashed(value):
                out["phone"] = out["phone_e164"] = value
            elif normalize_phone_digits(value):
                out["phone"] = sha256_hex(normalize_phone_digits(value))
                out["phone_e164"] = sha256_hex(normalize_phone_e164(value))
        elif field in ("first_name", "last_name"):
            out[field] = _hash(value, normalize_name)
            out[field + "_plain"] = _hash(value, normalize_name_plain)
        elif field in ("city", "state"):
            out[field] = _hash(value, normalize_city_state)
        elif field == "zip":
            out["zip"] = _hash(value, normalize_zip)
        elif field == "external_id":
            out["external_id"] = _hash(value, normalize_external_id)
        elif field == "country":
            out["country"] = value.upper()
        else:
            out[field] = value
    return out
