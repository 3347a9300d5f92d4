"""Configuration: TOML + environment + systemd credentials, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import config
from daemon.__main__ import main
from daemon.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent

FULL_ENV = {
    "ZALO_APP_SECRET": "app-secret-123456",
    "ZALO_OA_SECRET_KEY": "oa-secret-abcdef",
    "CLEVERTAP_ACCOUNT_ID": "W9R-ACCOUNT",
    "CLEVERTAP_PASSCODE": "passcode-777777",
    "CLEVERTAP_WEBHOOK_USER": "ctuser",
    "CLEVERTAP_WEBHOOK_PASSWORD": "ctpass-55555",
}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


MINIMAL = '[zalo]\napp_id = "123"\noa_id = "456"\n'


def test_repository_example_config_is_valid() -> None:
    cfg = config.load(ROOT / "config.toml", env=FULL_ENV)
    assert cfg.server.port == 8080
    assert cfg.clevertap.batch_max == 1000
    assert cfg.webhooks.clevertap.dedupe_window_s == 86400
    assert set(cfg.templates) >= {"welcome", "promo"}


def test_defaults_and_env_secrets(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL), env=FULL_ENV)
    assert cfg.zalo.requests_per_second == 50
    assert cfg.secrets.zalo_oa_secret_key.reveal() == "oa-secret-abcdef"
    assert "oa-secret-abcdef" not in repr(cfg)
    assert cfg.secrets.zalo_refresh_token is None  # optional after the first run


def test_credentials_directory_wins_over_environment(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "CLEVERTAP_PASSCODE").write_text("from-credential-file\n")
    cfg = config.load(write(tmp_path, MINIMAL), env={**FULL_ENV, "CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.secrets.clevertap_passcode.reveal() == "from-credential-file"
    assert cfg.secrets.clevertap_passcode.source == "credential CLEVERTAP_PASSCODE"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL + "[server]\nport = \"80\"\n", "server.port"),
        (MINIMAL + "[server]\nprot = 80\n", "server.prot"),
        (MINIMAL + "[clevertap]\napi_base = \"sg1.api.clevertap.com\"\n", "clevertap.api_base"),
        (MINIMAL + "[clevertap]\nbatch_max = 5000\n", "clevertap.batch_max"),
        (MINIMAL + "[clevertap]\nidentity = \"email\"\n", "clevertap.identity"),
        (MINIMAL + "[log]\nformat = \"xml\"\n", "log.format"),
        (MINIMAL + "[nonsense]\nx = 1\n", "nonsense"),
        ('[zalo]\napp_id = "abc"\noa_id = "1"\n', "zalo.app_id"),
        ('[zalo]\noa_id = "1"\n', "zalo.app_id"),
        (MINIMAL + "[secrets]\nZALO_APP_SECRET = \"x\"\n", "secrets"),
        (MINIMAL + "[backfill]\nenabled = 1\n", "backfill.enabled"),
        (MINIMAL + "[backfill]\nsince = \"2020-01-01\"\n", "backfill.since"),
        (MINIMAL + "[clevertap]\nuser_id_property = \"zalo.id\"\n", "clevertap.user_id_property"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text), env=FULL_ENV)
    assert err.value.key == key


def test_missing_secret_names_the_variable(tmp_path: Path) -> None:
    env = dict(FULL_ENV)
    del env["ZALO_OA_SECRET_KEY"]
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, MINIMAL), env=env)
    assert err.value.key == "ZALO_OA_SECRET_KEY"
    assert "CREDENTIALS_DIRECTORY" in str(err.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[server\n"), env=FULL_ENV)
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml", env=FULL_ENV)


def test_check_config_masks_every_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for k, v in FULL_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ZALO_REFRESH_TOKEN", "refresh-token-secret-999")
    assert main(["check-config", "--config", str(ROOT / "config.toml")]) == 0
    out = capsys.readouterr().out
    for secret in [*FULL_ENV.values(), "refresh-token-secret-999"]:
        assert secret not in out
    assert "ZALO_OA_SECRET_KEY = \"**** (from env ZALO_OA_SECRET_KEY)\"" in out
    assert "[templates.welcome]" in out and "requests_per_second = 50.0" in out


def test_check_config_exits_2_naming_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for k, v in FULL_ENV.items():
        monkeypatch.setenv(k, v)
    path = write(tmp_path, MINIMAL + "[zalo.extra]\n")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "zalo.extra" in capsys.readouterr().err
    monkeypatch.delenv("CLEVERTAP_PASSCODE")
    assert main(["check-config", "--config", str(write(tmp_path, MINIMAL))]) == 2
    assert "CLEVERTAP_PASSCODE" in capsys.readouterr().err


def test_check_config_rejects_an_invalid_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for k, v in FULL_ENV.items():
        monkeypatch.setenv(k, v)
    path = write(tmp_path, MINIMAL + '[templates.bad]\ntype = "buttons"\ntext = "hi"\nbuttons = []\n')
    assert main(["check-config", "--config", str(path)]) == 2
    assert "templates.bad.buttons" in capsys.readouterr().err
