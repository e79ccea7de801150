"""One destination object per ``[[destinations]]`` table, by its kind.

Each kind's package exports ``create(settings, environ)``, which reads the
credentials from the environment (a missing one stops the start, naming the
variable) and returns the pure ``Destination``.
"""

from __future__ import annotations

from collections.abc import Mapping

from convtrack.config_destinations import (
    DestinationSettings,
    Ga4Settings,
    GoogleAdsSettings,
    LinkedInSettings,
    MetaCapiSettings,
    SlackSettings,
    TikTokSettings,
    WebhookSettings,
)
from convtrack.deliver import ga4, google_ads, linkedin, meta_capi, slack, tiktok, webhook
from convtrack.deliver.base import Destination


def create_destination(settings: DestinationSettings, environ: Mapping[str, str]) -> Destination:
    match settings:
        case WebhookSettings():
            return webhook.create(settings, environ)
        case SlackSettings():
            return slack.create(settings, environ)
        case MetaCapiSettings():
            return meta_capi.create(settings, environ)
        case GoogleAdsSettings():
            return google_ads.create(settings, environ)
        case Ga4Settings():
            return ga4.create(settings, environ)
        case LinkedInSettings():
            return linkedin.create(settings, environ)
        case TikTokSettings():
            return tiktok.create(settings, environ)
