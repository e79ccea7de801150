"""``convtrack secrets new``: a secret the settings take as it is printed."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from convtrack.cli.main import cli
from convtrack.clock import ManualClock
from convtrack.config import load_settings
from convtrack.deliver.destinations.webhook.config import decode_secret
from convtrack.runtime.embedded import Pipeline
from tests.deliver.test_webhook import Receiver, deliver_all, send
from tests.support.inprocess import ENV

ROOT = Path(__file__).resolve().parents[2]


def new_secret(kind: str) -> str:
    result = CliRunner().invoke(cli, ["secrets", "new", kind])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1  # fit for $(…)
    return lines[0]


def test_a_new_webhook_secret_signs_what_a_receiver_verifies(tmp_path: Path) -> None:
    secret = new_secret("webhook")
    assert secret.startswith("whsec_") and len(decode_secret(secret)) == 32
    assert new_secret("webhook") != secret
    receiver = Receiver(secret)  # the receiver is given the same secret
    clock = ManualClock(start_us=1_796_000_000_000_000)
    env = {**ENV, "CRM_WEBHOOK_SECRET": secret}
    table = {"kind": "webhook", "name": "crm", "endpoint": receiver.url,
             "secret_env": "CRM_WEBHOOK_SECRET", "batch_max_wait_secs": 0}  # fmt: skip
    overrides = {"server": {"data_dir": str(tmp_path)}, "destinations": [table]}
    pipeline = Pipeline(load_settings(environ=env, overrides=overrides), clock=clock,
                        environ=env, delivery_sleep=clock.advance)  # fmt: skip
    try:
        send(pipeline, clock, "order-1")
        deliver_all(pipeline)
    finally:
        pipeline.close()
        receiver.close()
    assert [r["valid"] for r in receiver.requests] == [True]


def test_a_new_token_secret_is_taken_by_a_pipeline(tmp_path: Path) -> None:
    secret = new_secret("token")
    env = {**ENV, "CONVTRACK_TOKEN_SECRET": secret}
    settings = load_settings(environ=env, overrides={"server": {"data_dir": str(tmp_path)}})
    Pipeline(settings, environ=env).close()  # a secret it refused would raise ConfigError
    assert not (tmp_path / "token-secret").exists()  # the one given was used


def test_an_unknown_kind_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["secrets", "new", "password"])
    assert result.exit_code == 2 and "webhook" in result.output


def test_the_readme_makes_its_webhook_secret_with_the_command() -> None:
    readme = (ROOT / "README.md").read_text()
    forward = readme.split("## Forward conversions", 1)[1].split("\n## ", 1)[0]
    assert "whsec_…" not in forward  # a placeholder that fails validation
    assert "$(.venv/bin/convtrack secrets new webhook)" in forward
