"""One typed, frozen configuration: TOML file, then CONVTRACK_* environment, then flags.

Every setting is ``section.key``; the environment form is
``CONVTRACK_<SECTION>_<KEY>`` and wins over the file. Unknown keys in the
file, and unknown ``CONVTRACK_<SECTION>_*`` variables of a known section, are
errors that name the key. Secrets never appear here: keys and tokens are
named by the environment variable that holds them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin, get_type_hints

import msgspec

from convtrack.config_errors import (
    Sources,
    check_sections,
    did_you_mean,
    invalid_value,
    setting_names,
    table_fields,
    unsectioned_env_hints,
    with_env_name,
)
from convtrack.deliver.destinations import DestinationSettings
from convtrack.errors import ConfigError
from convtrack.model.currency import iso4217_codes

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    data_dir: str = "./convtrack-data"
    shutdown_timeout_secs: Annotated[float, msgspec.Meta(gt=0, le=60)] = 8.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # SO_REUSEPORT: several collector processes listen on one port (the kernel spreads
    # the connections), for more ingest than one interpreter can do on one machine.
    reuse_port: bool = False
    # On the embedded default (serve with every role), the roles that run in child
    # processes of their own, one child per entry ("store+deliver": both in one child);
    # the collect role stays in the serving process. Each process has its own interpreter
    # and so its own core: the processor is not slowed by the collector's requests.
    # [] runs every role in the one serving process.
    child_roles: list[str] = msgspec.field(default_factory=lambda: ["process", "store+deliver"])
    # Guards of every connection (collect/protocol.py): the request line and headers of one
    # request at most this many bytes (431 past it), complete within this time of the
    # connection or of the request's first byte (408 past it), and at most this many open
    # connections per process (a new one past it is answered 503).
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1_048_576)] = 16_384
    header_timeout_secs: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 2048


class LogSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    kind: Literal["sqlite", "kafka"] = "sqlite"
    kafka_bootstrap: str = ""
    kafka_topic_prefix: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9._-]+$")] = "convtrack"
    kafka_partitions: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 12
    kafka_replication: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    kafka_linger_ms: NonNegative = 5.0
    sqlite_synchronous: Literal["full", "normal"] = "full"
    max_pending_events: Positive = 200_000
    max_commit_events: Positive = 20_000


class LimitsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    user_events_per_sec: NonNegative = 10.0
    # Events one user may send at once (the bucket's size); 0: user_events_per_sec rounded up.
    user_burst: Annotated[int, msgspec.Meta(ge=0)] = 0
    key_events_per_sec: NonNegative = 0.0
    max_event_age_secs: Positive = 604_800
    max_future_secs: Positive = 600
    max_event_bytes: Positive = 65_536
    max_batch_bytes: Annotated[int, msgspec.Meta(ge=1, le=524_288)] = 524_288
    max_batch_events: Annotated[int, msgspec.Meta(ge=1, le=500)] = 500
    max_properties: Positive = 200
    max_properties_depth: Annotated[int, msgspec.Meta(ge=1, le=32)] = 8
    max_string_chars: Positive = 8192


class CollectSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    source: str = "default"
    allowed_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    cors_max_age_secs: Annotated[int, msgspec.Meta(ge=0)] = 600
    # Segment-spec messages with an amount but no currency: this ISO 4217 code ("": none,
    # they are rejected currency_missing); per source in default_currencies (source -> code).
    default_currency: str = ""
    default_currencies: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for where, code in [("default_currency", self.default_currency)] + [
            (f"default_currencies.{source}", code)
            for source, code in self.default_currencies.items()
        ]:
            if code and code not in iso4217_codes():
                raise ValueError(f"collect.{where}: {code!r} is not an uppercase ISO 4217 code")

    def currency_of(self, source: str) -> str | None:
        """The default currency of a source's Segment messages, if one is set."""
        return self.default_currencies.get(source) or self.default_currency or None


class KeySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    role: Literal["write", "server", "admin"]
    key_env: str
    source: str = "default"
    allowed_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])


class RejectsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_rows: Positive = 100_000
    max_body_bytes: Positive = 65_536


class ColdSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    uri: str = ""
    flush_interval_secs: Annotated[float, msgspec.Meta(gt=0)] = 300
    flush_max_rows: Annotated[int, msgspec.Meta(ge=1, le=5_000_000)] = 200_000
    s3_endpoint_url: str = ""
    create_bucket: bool = True
    compaction_interval_secs: Annotated[float, msgspec.Meta(gt=0)] = 3600
    retention_days: Annotated[int, msgspec.Meta(ge=0)] = 0
    removed_grace_secs: Annotated[float, msgspec.Meta(ge=0)] = 600


class TokensSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # At most a year: a token is remembered by the deduplication for its whole life.
    ttl_secs: Annotated[int, msgspec.Meta(ge=60, le=31_536_000)] = 604_800


class DedupSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    window_secs: Annotated[int, msgspec.Meta(ge=60, le=30 * 86_400)] = 86_400


class HotSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    kind: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = ""
    redis_prefix: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9:._-]+$")] = "ct"
    live_window_minutes: Annotated[int, msgspec.Meta(ge=1, le=1440)] = 60
    latency_window_minutes: Annotated[int, msgspec.Meta(ge=1, le=1440)] = 5
    # Minutes of per-minute buckets kept (the name is public: it counts minutes).
    minute_retention: Annotated[int, msgspec.Meta(ge=60, le=10_080)] = 1440


class ConversionsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    event_names: list[str] = msgspec.field(default_factory=list)
    count_bots: bool = False


class SessionsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    ttl_secs: Annotated[int, msgspec.Meta(ge=60, le=86_400)] = 1800
    lookback_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 30


class ProcessSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_batch_events: Annotated[int, msgspec.Meta(ge=1, le=50_000)] = 2000
    # How many times in a row one event must fail a stage, alone, before it is quarantined.
    poison_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    # A stage with work waiting that made no progress for this long is unhealthy (/readyz).
    stall_secs: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 60


class ConsentSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # What an event without a ``consent`` answer is taken to have granted.
    default_granted: bool = True


class DeadLettersSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    alert_threshold: Positive = 1000
    max_per_destination: Positive = 1_000_000


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    limits: LimitsSettings = msgspec.field(default_factory=LimitsSettings)
    collect: CollectSettings = msgspec.field(default_factory=CollectSettings)
    rejects: RejectsSettings = msgspec.field(default_factory=RejectsSettings)
    cold: ColdSettings = msgspec.field(default_factory=ColdSettings)
    tokens: TokensSettings = msgspec.field(default_factory=TokensSettings)
    dedup: DedupSettings = msgspec.field(default_factory=DedupSettings)
    hot: HotSettings = msgspec.field(default_factory=HotSettings)
    conversions: ConversionsSettings = msgspec.field(default_factory=ConversionsSettings)
    sessions: SessionsSettings = msgspec.field(default_factory=SessionsSettings)
    process: ProcessSettings = msgspec.field(default_factory=ProcessSettings)
    consent: ConsentSettings = msgspec.field(default_factory=ConsentSettings)
    deadletters: DeadLettersSettings = msgspec.field(default_factory=DeadLettersSettings)
    keys: list[KeySettings] = msgspec.field(default_factory=list)
    destinations: list[DestinationSettings] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        names = [d.name for d in self.destinations]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"destination name {name!r} is used more than once")

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def lake_uri(self) -> str:
        return self.cold.uri or str(self.data_dir / "lake")


SECTIONS: dict[str, type[msgspec.Struct]] = {
    "server": ServerSettings,
    "log": LogSettings,
    "limits": LimitsSettings,
    "collect": CollectSettings,
    "rejects": RejectsSettings,
    "cold": ColdSettings,
    "tokens": TokensSettings,
    "dedup": DedupSettings,
    "hot": HotSettings,
    "conversions": ConversionsSettings,
    "sessions": SessionsSettings,
    "process": ProcessSettings,
    "consent": ConsentSettings,
    "deadletters": DeadLettersSettings,
}
# Environment variables that share the prefix but are not settings.
RESERVED_ENV = frozenset(
    {
        "CONVTRACK_WRITE_KEY",
        "CONVTRACK_SERVER_KEY",
        "CONVTRACK_ADMIN_KEY",
        "CONVTRACK_TOKEN_SECRET",
        "CONVTRACK_TOKEN_SECRET_PREVIOUS",
    }
)


# Top-level members that are lists of tables ([[keys]], [[destinations]]), not sections.
TABLE_LISTS = frozenset({"keys", "destinations"})


def env_name(section: str, key: str) -> str:
    return f"CONVTRACK_{section.upper()}_{key.upper()}"


def known_settings() -> list[str]:
    """Every ``section.key`` of the sections (not the [[keys]] and [[destinations]] tables)."""
    return setting_names(SECTIONS)


def ignored_env_hints(environ: Mapping[str, str]) -> list[str]:
    """Warnings for ``CONVTRACK_*`` variables of no section that look like a setting."""
    return unsectioned_env_hints(environ, SECTIONS, RESERVED_ENV)


def _env_overrides(environ: Mapping[str, str], sources: Sources) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if name in RESERVED_ENV:
            continue
        for section, cls in SECTIONS.items():
            prefix = f"CONVTRACK_{section.upper()}_"
            if not name.startswith(prefix):
                continue
            key = name[len(prefix) :].lower()
            hints = get_type_hints(cls, include_extras=True)
            if key not in cls.__struct_fields__:
                hint = did_you_mean(f"{section}.{key}", known_settings(), with_env_name)
                raise ConfigError(
                    f"unknown setting {section}.{key} (from environment {name}){hint}"
                )
            value = _parse_env_value(name, raw, hints[key], f"{section}.{key}")
            out.setdefault(section, {})[key] = value
            sources[(section, key)] = f"environment variable {name}"
    return out


def _parse_env_value(name: str, raw: str, field_type: Any, setting: str) -> Any:
    if get_origin(field_type) is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if get_origin(field_type) is dict:  # "name=value,name=value"
        pairs = [item.partition("=") for item in raw.split(",") if item.strip()]
        if any(not sep or not key.strip() for key, sep, _ in pairs):
            raise ConfigError(f"{name}: cannot use {raw!r}: expected name=value,name=value")
        return {key.strip(): value.strip() for key, _, value in pairs}
    try:
        return msgspec.convert(raw, field_type, strict=False)
    except msgspec.ValidationError as exc:
        source = f"environment variable {name}"
        raise ConfigError(invalid_value(setting, raw, source, field_type)) from exc


def _describe(exc: msgspec.ValidationError, data: Mapping[str, Any]) -> str:
    text = str(exc)
    match = re.search(r"unknown field `([^`]+)`(?: - at `\$\.?([^`]*)`)?", text)
    if match:
        where = (match.group(2) or "").replace("[", ".").replace("]", "")
        fields = [f"{where}.{name}" for name in table_fields(data, where, KeySettings)]
        hint = did_you_mean(f"{where}.{match.group(1)}", fields) if fields else ""
        return f"unknown setting {where + '.' if where else ''}{match.group(1)}{hint}"
    path = re.search(r" - at `\$\.?([^`]*)`", text)
    if path:
        return f"invalid setting {path.group(1)}: {text.split(' - at ', maxsplit=1)[0]}"
    return text


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build the settings: defaults < TOML file < environment < explicit overrides (flags)."""
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
    sources: Sources = {}
    env = _env_overrides(os.environ if environ is None else environ, sources)
    for layer, source in ((env, None), (overrides or {}, "the command line")):
        for section, values in layer.items():
            if isinstance(values, list):  # a list of tables ([[keys]], [[destinations]])
                data[section] = values
                continue
            merged = dict(data.get(section) or {})
            merged.update(values)
            data[section] = merged
            if source is not None:
                sources.update({(section, key): source for key in values})
    file_source = "the settings" if config_file is None else f"config file {config_file}"
    check_sections(data, sources, file_source, SECTIONS, TABLE_LISTS)
    try:
        return msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc, data)) from exc


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(settings)
    return result
