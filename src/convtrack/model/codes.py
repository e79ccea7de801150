"""Stable error codes. Clients match on these strings; never rename one."""

from __future__ import annotations

from typing import Final

# Validation codes for one event (CONTRACT.md, "Ingestion"), plus our additions.
EVENT_NAME_MISSING: Final = "event_name_missing"
EVENT_NAME_INVALID: Final = "event_name_invalid"
USER_ID_MISSING: Final = "user_id_missing"
USER_ID_INVALID: Final = "user_id_invalid"
SESSION_ID_INVALID: Final = "session_id_invalid"
TIMESTAMP_IN_FUTURE: Final = "timestamp_in_future"
TIMESTAMP_TOO_OLD: Final = "timestamp_too_old"
TIMESTAMP_INVALID: Final = "timestamp_invalid"
VALUE_NOT_NUMBER: Final = "value_not_number"
VALUE_NOT_INTEGER_MINOR_UNITS: Final = "value_not_integer_minor_units"
VALUE_NEGATIVE: Final = "value_negative"
VALUE_TOO_LARGE: Final = "value_too_large"
VALUE_MISSING: Final = "value_missing"
VALUE_TOO_PRECISE: Final = "value_too_precise"  # Segment: more decimals than the currency has
TYPE_UNSUPPORTED: Final = "type_unsupported"  # Segment: not track, identify, page or screen
CURRENCY_MISSING: Final = "currency_missing"
CURRENCY_NOT_UPPERCASE: Final = "currency_not_uppercase"
CURRENCY_UNKNOWN: Final = "currency_unknown"
EVENT_ID_MISMATCH: Final = "event_id_mismatch"
EVENT_ID_INVALID: Final = "event_id_invalid"
PROPERTIES_INVALID: Final = "properties_invalid"
CONTEXT_INVALID: Final = "context_invalid"
USER_INVALID: Final = "user_invalid"
CLICK_IDS_INVALID: Final = "click_ids_invalid"
CONSENT_INVALID: Final = "consent_invalid"
CAMPAIGN_ID_INVALID: Final = "campaign_id_invalid"
CONVERSION_TOKEN_INVALID: Final = "conversion_token_invalid"
ORDER_ID_INVALID: Final = "order_id_invalid"  # POST /v1/conversion-tokens
RATE_LIMITED: Final = "rate_limited"

# Whole-body codes: the request could not be read as events at all.
JSON_INVALID: Final = "json_invalid"
JSON_TOO_DEEP: Final = "json_too_deep"
BODY_NOT_OBJECT: Final = "body_not_object"
BODY_EMPTY: Final = "body_empty"
BATCH_INVALID: Final = "batch_invalid"
BATCH_TOO_LARGE: Final = "batch_too_large"
EVENT_NOT_OBJECT: Final = "event_not_object"

# The "error" member of non-validation error answers.
ERR_VALIDATION: Final = "validation_failed"
ERR_KEY_MISSING: Final = "key_missing"
ERR_KEY_UNKNOWN: Final = "key_unknown"
ERR_ROLE_NOT_ALLOWED: Final = "role_not_allowed"
ERR_ORIGIN_NOT_ALLOWED: Final = "origin_not_allowed"
ERR_BODY_TOO_LARGE: Final = "body_too_large"
ERR_UNSUPPORTED_MEDIA_TYPE: Final = "unsupported_media_type"
ERR_UNSUPPORTED_ENCODING: Final = "unsupported_content_encoding"
ERR_RATE_LIMITED: Final = "rate_limited"
ERR_UNAVAILABLE: Final = "unavailable"
ERR_NOT_FOUND: Final = "not_found"
ERR_METHOD_NOT_ALLOWED: Final = "method_not_allowed"
ERR_BAD_QUERY: Final = "query_invalid"
ERR_HEADERS_TOO_LARGE: Final = "headers_too_large"  # 431: server.max_header_bytes
ERR_REQUEST_TIMEOUT: Final = "request_timeout"  # 408: server.header_timeout_secs
ERR_INTERNAL: Final = "internal_error"
ERR_SDK_NOT_BUILT: Final = "sdk_not_built"
# POST /v1/admin/flush: 409 in a process without the store role; 503 while its cold
# store is not running (waiting for the lake, stopping) or its lake fails.
ERR_NO_STORE_ROLE: Final = "store_role_not_running"
ERR_COLD_STORE_UNAVAILABLE: Final = "cold_store_unavailable"

MESSAGES: Final[dict[str, str]] = {
    EVENT_NAME_MISSING: "event_name is required and must be a non-empty string",
    EVENT_NAME_INVALID: (
        "event_name must be a string of 1 to 128 printable characters (no control, format"
        " or separator characters other than the space)"
    ),
    USER_ID_MISSING: "either user_id or session_id is required",
    USER_ID_INVALID: "user_id must be a string or integer of 1 to 256 printable characters",
    SESSION_ID_INVALID: "session_id must be a string or integer of 1 to 256 printable characters",
    TIMESTAMP_IN_FUTURE: "timestamp is too far ahead of the server clock",
    TIMESTAMP_TOO_OLD: "timestamp is older than the configured limit",
    TIMESTAMP_INVALID: "timestamp must be RFC 3339 with an offset or integer epoch milliseconds",
    VALUE_NOT_NUMBER: "value must be a number",
    VALUE_NOT_INTEGER_MINOR_UNITS: "value must be an integer in the currency's minor units",
    VALUE_NEGATIVE: "value must not be negative",
    VALUE_TOO_LARGE: "value must be at most 10^12 minor units (1000000000000)",
    VALUE_MISSING: "value is required when currency is present",
    VALUE_TOO_PRECISE: (
        "the amount (major units) has more decimals than the currency's minor unit"
        " (USD 2, JPY 0, KWD 3)"
    ),
    TYPE_UNSUPPORTED: "type must be track, identify, page or screen",
    CURRENCY_MISSING: "currency is required when value is present",
    CURRENCY_NOT_UPPERCASE: "currency must be an uppercase ISO 4217 code",
    CURRENCY_UNKNOWN: "currency is not an ISO 4217 code",
    EVENT_ID_MISMATCH: "event_id in the body and in the query string differ",
    EVENT_ID_INVALID: "event_id must be a printable string of 1 to 128 characters",
    PROPERTIES_INVALID: "properties must be an object within the depth and size limits",
    CONTEXT_INVALID: (
        "context must be an object with string members; context.campaign members must be"
        " printable text of at most 1024 characters"
    ),
    USER_INVALID: "user must be an object of string contact fields",
    CLICK_IDS_INVALID: "click_ids must be an object of printable strings (at most 1024 characters)",
    CONSENT_INVALID: "consent must be an object of booleans",
    CAMPAIGN_ID_INVALID: "campaign_id must be a string or integer of 1 to 128 printable characters",
    CONVERSION_TOKEN_INVALID: (
        "conversion_token must be a token string from POST /v1/conversion-tokens, sent"
        " unchanged: this one is not a string, malformed, forged, tampered with, issued"
        " for another source or expired"
    ),
    ORDER_ID_INVALID: "order_id must be a non-empty printable string of at most 256 characters",
    RATE_LIMITED: "too many events for this user; retry later",
    JSON_INVALID: "the body is not valid UTF-8 JSON",
    JSON_TOO_DEEP: "the body is nested too deeply",
    BODY_NOT_OBJECT: "the body must be a JSON object",
    BODY_EMPTY: "the body is empty",
    BATCH_INVALID: "the body must be an object with a 'batch' array",
    BATCH_TOO_LARGE: "a batch holds at most the configured number of events",
    EVENT_NOT_OBJECT: "each event must be a JSON object",
}


def message(code: str) -> str:
    return MESSAGES.get(code, code)
