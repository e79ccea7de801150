"""GA4 options: the settings table plus the Measurement Protocol API secret."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from convtrack.deliver.destinations.ga4.settings import Ga4Settings
from convtrack.deliver.secrets import read_secret
from convtrack.errors import ConfigError

GA4_BASE_URL = "https://www.google-analytics.com"


@dataclass(frozen=True)
class Ga4Config:
    name: str
    base_url: str
    # Exactly one of the two is set: a web stream or an app (Firebase) stream.
    measurement_id: str
    firebase_app_id: str
    api_secret: str
    window_hours: int = 72
    engagement_time_msec: int = 100

    @property
    def app_stream(self) -> bool:
        return bool(self.firebase_app_id)

    @classmethod
    def build(cls, settings: Ga4Settings, environ: Mapping[str, str]) -> Ga4Config:
        measurement_id = settings.measurement_id.strip()
        firebase_app_id = settings.firebase_app_id.strip()
        if bool(measurement_id) == bool(firebase_app_id):
            raise ConfigError(
                f"destination {settings.name}: set exactly one of measurement_id (a web "
                "stream, G-…) and firebase_app_id (an app stream)"
            )
        secret = read_secret(settings.name, settings.api_secret_env, environ,
                             "the GA4 Measurement Protocol API secret")  # fmt: skip
        return cls(
            name=settings.name,
            base_url=(settings.endpoint or GA4_BASE_URL).rstrip("/"),
            measurement_id=measurement_id,
            firebase_app_id=firebase_app_id,
            api_secret=secret,
            window_hours=settings.window_hours,
            engagement_time_msec=settings.engagement_time_msec,
        )
