"""Typed configuration: config.toml + environment variables + systemd credentials."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

# Secrets never come from config.toml (it is usually world-readable and often committed):
# each is read from $CREDENTIALS_DIRECTORY/<NAME> (systemd LoadCredential=) or else from the
# environment variable of the same name.
SECRET_NAMES: dict[str, str] = {
    "zalo_app_secret": "ZALO_APP_SECRET",
    "zalo_oa_secret_key": "ZALO_OA_SECRET_KEY",
    "zalo_refresh_token": "ZALO_REFRESH_TOKEN",
    "clevertap_account_id": "CLEVERTAP_ACCOUNT_ID",
    "clevertap_passcode": "CLEVERTAP_PASSCODE",
    "clevertap_webhook_user": "CLEVERTAP_WEBHOOK_USER",
    "clevertap_webhook_password": "CLEVERTAP_WEBHOOK_PASSWORD",
}
# ZALO_REFRESH_TOKEN is only needed on the very first run (the store owns the token after).
OPTIONAL_SECRETS = {"zalo_refresh_token"}


class ConfigError(Exception):
    """A configuration problem, always naming the key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class Secret:
    """A string that never shows itself in repr(), str() or logs."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(****, from {self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _meta(help: str, **checks: Any) -> dict[str, Any]:
    return {"help": help, **checks}


@dataclass(frozen=True)
class ServerConfig:
    host: str = field(default="127.0.0.1", metadata=_meta("listen address"))
    port: int = field(default=8080, metadata=_meta("listen port", min=0, max=65535))
    max_body_bytes: int = field(default=1_048_576, metadata=_meta("largest accepted request body", min=1024))
    shutdown_timeout_s: float = field(
        default=10.0, metadata=_meta("time given to in-flight work on SIGTERM", min=0)
    )


@dataclass(frozen=True)
class StoreConfig:
    path: str = field(default="state/zalo-bridge.db", metadata=_meta("SQLite state file"))
    max_backlog: int = field(
        default=100_000, metadata=_meta("readiness fails when ready+in-flight jobs exceed this", min=1)
    )
    retention_days: float = field(
        default=7.0, metadata=_meta("finished jobs are deleted after this many days", min=0)
    )
    poll_interval_s: float = field(
        default=5.0, metadata=_meta("idle workers look for due jobs at least this often", min=0.01)
    )


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = field(default="info", metadata=_meta("log level"))
    format: Literal["json", "console"] = field(default="json", metadata=_meta("json lines or console"))


@dataclass(frozen=True)
class ZaloConfig:
    app_id: str = field(default="", metadata=_meta("Zalo app id (numeric string)", digits=True))
    oa_id: str = field(default="", metadata=_meta("Official Account id (numeric string)", digits=True))
    api_base: str = field(default="https://openapi.zalo.me", metadata=_meta("OA Open API host", url=True))
    oauth_base: str = field(default="https://oauth.zaloapp.com", metadata=_meta("OAuth v4 host", url=True))
    redirect_uri: str = field(
        default="", metadata=_meta("OAuth callback URL registered in the Zalo app", url=True, optional=True)
    )
    requests_per_second: float = field(
        default=50.0, metadata=_meta("one budget for every Zalo API call of the process", min=0.1)
    )
    signature_max_age_s: float = field(
        default=300.0, metadata=_meta("replay window on the webhook timestamp", min=1)
    )
    signature_variants: list[Literal["app_secret", "oa_id"]] = field(
        default_factory=list,
        metadata=_meta("extra signature formulas to accept (see README); empty = strict"),
    )
    request_timeout_s: float = field(default=30.0, metadata=_meta("per-request timeout", min=0.1))
    token_refresh_margin_s: float = field(
        default=4 * 3600.0, metadata=_meta("refresh the access token this long before it expires", min=0)
    )
    token_max_age_s: float = field(
        default=3 * 86400.0,
        metadata=_meta("refresh at least this often even when idle (keeps the refresh token alive)", min=60),
    )


@dataclass(frozen=True)
class CleverTapConfig:
    api_base: str = field(
        default="https://sg1.api.clevertap.com", metadata=_meta("region API host", url=True)
    )
    identity: Literal["zalo_user_id", "user_id_by_app", "phone"] = field(
        default="zalo_user_id", metadata=_meta("which value becomes the CleverTap identity")
    )
    identity_prefix: str = field(default="", metadata=_meta("prefix added to the identity value"))
    user_id_property: str = field(
        default="zalo_user_id", metadata=_meta("profile property holding the Zalo user_id", property_name=True)
    )
    batch_max: int = field(default=1000, metadata=_meta("records per /1/upload call", min=1, max=1000))
    flush_interval_s: float = field(default=1.0, metadata=_meta("upload a partial batch after this long", min=0))
    max_concurrency: int = field(
        default=4, metadata=_meta("uploads in flight (CleverTap allows 15 per account)", min=1, max=15)
    )
    request_timeout_s: float = field(default=60.0, metadata=_meta("per-request timeout", min=0.1))
    max_attempts: int = field(default=12, metadata=_meta("attempts before a record goes dead", min=1))
    backoff_base_s: float = field(default=2.0, metadata=_meta("first retry delay", min=0))
    backoff_max_s: float = field(default=600.0, metadata=_meta("largest retry delay", min=0))
    profile_refresh_s: float = field(
        default=3600.0,
        metadata=_meta("re-send an unchanged profile only when last interaction moved this much", min=0),
    )


@dataclass(frozen=True)
class ZaloWebhookConfig:
    dedupe_window_s: float = field(
        default=86400.0, metadata=_meta("redeliveries within this window are dropped", min=0)
    )


@dataclass(frozen=True)
class CleverTapWebhookConfig:
    dedupe_window_s: float = field(
        default=86400.0, metadata=_meta("campaign retries within this window are dropped", min=0)
    )
    template_key: str = field(
        default="zalo_template", metadata=_meta("key-value naming a template from [templates]")
    )


@dataclass(frozen=True)
class WebhooksConfig:
    zalo: ZaloWebhookConfig = field(default_factory=ZaloWebhookConfig)
    clevertap: CleverTapWebhookConfig = field(default_factory=CleverTapWebhookConfig)


@dataclass(frozen=True)
class SenderConfig:
    concurrency: int = field(default=8, metadata=_meta("Zalo sends in flight", min=1, max=256))
    max_attempts: int = field(default=8, metadata=_meta("attempts before a send job goes dead", min=1))
    backoff_base_s: float = field(default=2.0, metadata=_meta("first retry delay", min=0))
    backoff_max_s: float = field(default=900.0, metadata=_meta("largest retry delay", min=0))
    download_max_bytes: int = field(
        default=5 * 1024 * 1024, metadata=_meta("largest file attachment downloaded for upload", min=1)
    )


@dataclass(frozen=True)
class BackfillConfig:
    enabled: bool = field(default=True, metadata=_meta("run the follower backfill on a schedule"))
    interval_s: float = field(default=21600.0, metadata=_meta("time between passes", min=1))
    first_run_delay_s: float = field(default=60.0, metadata=_meta("delay before the first pass", min=0))
    fetch_details: bool = field(default=False, metadata=_meta("call user/detail for each new follower"))
    since: str = field(
        default="2014_01_01", metadata=_meta("oldest last-interaction day listed by date slices (YYYY_MM_DD)")
    )
    tags: list[str] = field(default_factory=list, metadata=_meta("extra tag slices to list"))


@dataclass(frozen=True)
class Secrets:
    zalo_app_secret: Secret | None = None
    zalo_oa_secret_key: Secret | None = None
    zalo_refresh_token: Secret | None = None
    clevertap_account_id: Secret | None = None
    clevertap_passcode: Secret | None = None
    clevertap_webhook_user: Secret | None = None
    clevertap_webhook_password: Secret | None = None

    def values(self) -> list[str]:
        return [s.reveal() for s in dataclasses.astuple(self) if s is not None]


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    log: LogConfig = field(default_factory=LogConfig)
    zalo: ZaloConfig = field(default_factory=ZaloConfig)
    clevertap: CleverTapConfig = field(default_factory=CleverTapConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    sender: SenderConfig = field(default_factory=SenderConfig)
    backfill: BackfillConfig = field(default_factory=BackfillConfig)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: Secrets = field(default_factory=Secrets)
    source: str = "<defaults>"

    def replace(self, **values: Any) -> "Config":
        """A copy with keys replaced: ``cfg.replace(**{"zalo.app_id": "1", "server.port": 0})``."""
        cfg = self
        for dotted, value in values.items():
            cfg = _replace_path(cfg, dotted.split("."), value)
        return cfg


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    child = getattr(obj, parts[0])
    return dataclasses.replace(obj, **{parts[0]: _replace_path(child, parts[1:], value)})


# --------------------------------------------------------------------------- loading


def load(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
) -> Config:
    """Load and validate. Raises ConfigError naming the key at fault."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config", f"file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{p} is not valid TOML: {exc}") from None
    secret_keys = [k for k in ("secrets",) if k in data]
    if secret_keys:
        raise ConfigError(
            "secrets",
            "secrets are not read from config.toml; use the environment or $CREDENTIALS_DIRECTORY "
            f"({', '.join(SECRET_NAMES.values())})",
        )
    data = dict(data)
    data["secrets"] = _read_secrets(env)
    cfg = _build(Config, data, "")
    cfg = dataclasses.replace(cfg, source=source)
    validate(cfg, require_secrets=require_secrets)
    return cfg


def _read_secrets(env: Mapping[str, str]) -> Secrets:
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    found: dict[str, Secret] = {}
    for attr, name in SECRET_NAMES.items():
        value: str | None = None
        origin = ""
        if cred_dir:
            f = Path(cred_dir) / name
            if f.is_file():
                value = f.read_text(encoding="utf-8").strip()
                origin = f"credential {name}"
        if value is None and env.get(name):
            value = env[name].strip()
            origin = f"env {name}"
        if value:
            found[attr] = Secret(value, origin)
    return Secrets(**found)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(path or "config", f"expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else key
            hint = f"; known keys: {', '.join(sorted(known))}" if known else ""
            raise ConfigError(where, f"unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            continue
        where = f"{path}.{name}" if path else name
        if name == "secrets":
            kwargs[name] = data[name]
            continue
        kwargs[name] = _coerce(hints[name], data[name], where, f.metadata)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(where, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(where, f"expected a list, got {type(value).__name__}")
        return [_coerce(item_tp, v, f"{where}[{i}]", {}) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(where, f"expected a table, got {type(value).__name__}")
        for k, v in value.items():
            if not isinstance(v, dict):
                raise ConfigError(f"{where}.{k}", f"expected a table, got {type(v).__name__}")
        return {k: dict(v) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"expected an integer, got {value!r}")
        _check_range(value, where, meta)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(where, f"expected a number, got {value!r}")
        _check_range(value, where, meta)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(where, f"expected a string, got {value!r}")
        return value
    if isinstance(tp, types.UnionType):  # pragma: no cover - not used by the schema
        raise ConfigError(where, f"unsupported type {tp}")
    raise ConfigError(where, f"unsupported type {_type_name(tp)}")  # pragma: no cover


def _check_range(value: float, where: str, meta: Mapping[str, Any]) -> None:
    if "min" in meta and value < meta["min"]:
        raise ConfigError(where, f"must be >= {meta['min']}, got {value}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(where, f"must be <= {meta['max']}, got {value}")


_FORBIDDEN_PROPERTY_CHARS = set("%><!|&.:;$'\"\\# ")


def validate(cfg: Config, *, require_secrets: bool = True) -> None:
    """Cross-field checks that the type walk cannot express."""
    for section_name in ("server", "store", "log", "zalo", "clevertap", "sender", "backfill"):
        section = getattr(cfg, section_name)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            key = f"{section_name}.{f.name}"
            if f.metadata.get("url"):
                if f.metadata.get("optional") and not value:
                    continue
                _check_url(key, value)
            if f.metadata.get("digits") and value and not value.isdigit():
                raise ConfigError(key, f"must be a numeric id string, got {value!r}")
            if f.metadata.get("property_name"):
                if not value or len(value) > 120 or _FORBIDDEN_PROPERTY_CHARS & set(value):
                    raise ConfigError(key, "must be 1-120 characters without spaces or any of %><!|&.:;$'\"\\#")
    if not cfg.zalo.app_id:
        raise ConfigError("zalo.app_id", "is required (the numeric id of your Zalo app)")
    if not cfg.zalo.oa_id:
        raise ConfigError("zalo.oa_id", "is required (the numeric id of your Official Account)")
    try:
        dt.datetime.strptime(cfg.backfill.since, "%Y_%m_%d")
    except ValueError:
        raise ConfigError("backfill.since", f"must be a date as YYYY_MM_DD, got {cfg.backfill.since!r}") from None
    if not cfg.store.path:
        raise ConfigError("store.path", "is required")
    validate_templates(cfg.templates)
    if require_secrets:
        for attr, name in SECRET_NAMES.items():
            if attr in OPTIONAL_SECRETS:
                continue
            if getattr(cfg.secrets, attr) is None:
                raise ConfigError(
                    name,
                    f"secret is missing: set the environment variable {name} "
                    f"or the systemd credential $CREDENTIALS_DIRECTORY/{name}",
                )


def validate_templates(templates: Mapping[str, Any]) -> None:
    """Every [templates.NAME] must be a valid message spec (placeholders are not rendered yet)."""
    from .zalo.messages import SpecError, validate as validate_spec

    for name, spec in templates.items():
        try:
            validate_spec(spec, where=f"templates.{name}")
        except SpecError as exc:
            raise ConfigError(exc.field, exc.message) from None


def _check_url(key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(key, f"must be an http(s) URL, got {value!r}")


# --------------------------------------------------------------------------- display


def effective(cfg: Config) -> dict[str, Any]:
    """The effective configuration as plain data, every secret masked."""

    def walk(obj: Any) -> Any:
        if isinstance(obj, Secret):
            return f"**** (from {obj.source})"
        if dataclasses.is_dataclass(obj):
            return {f.name: walk(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "source"}
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    out = walk(cfg)
    out["secrets"] = {
        SECRET_NAMES[k]: (v if v is not None else "(not set)") for k, v in out["secrets"].items()
    }
    return out


def to_toml(data: Mapping[str, Any]) -> str:
    """Render nested plain data as TOML (enough for check-config output)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{_key(k)} = {scalar(x)}" for k, x in v.items()) + " }"
        s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{s}"'

    def table(prefix: str, d: Mapping[str, Any]) -> None:
        flat = {k: v for k, v in d.items() if not isinstance(v, dict) or not v or prefix == "templates"}
        nested = {k: v for k, v in d.items() if k not in flat}
        if prefix and flat:
            lines.append(f"[{prefix}]")
        for k, v in flat.items():
            if isinstance(v, dict) and prefix == "templates":
                lines.append(f"[templates.{_key(k)}]")
                for kk, vv in v.items():
                    lines.append(f"{_key(kk)} = {scalar(vv)}")
                continue
            lines.append(f"{_key(k)} = {scalar(v)}")
        if prefix and flat:
            lines.append("")
        for k, v in nested.items():
            table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)

    table("", data)
    return "\n".join(lines).rstrip() + "\n"


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else f'"{k}"'
