"""The dial plan (sip_config/dialplan.toml): the dialed number selects a route."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from acd.models import check_levels
from callcenter.config import ConfigError


class _Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    number: str = Field(pattern=r"^(\*|\+?[0-9A-Za-z_.*#-]+)$")
    name: str = Field(min_length=1)
    prompt: str


class GreetingRoute(_Route):
    action: Literal["greeting"]
    collect_digits: int = Field(0, ge=0, le=32)
    digit_timeout: float = Field(5.0, gt=0, le=60)
    then_prompt: str | None = None


class BridgeRoute(_Route):
    action: Literal["bridge"]
    target: str
    ring_timeout: float = Field(20.0, gt=0, le=300)
    fallback_prompt: str | None = None

    @field_validator("target")
    @classmethod
    def _sip_uri(cls, v: str) -> str:
        if not v.startswith(("sip:", "sips:")) or "@" not in v and ":" not in v[4:]:
            raise ValueError("must be a SIP URI like sip:user@host:port")
        return v


class LoopRoute(_Route):
    action: Literal["loop"]


class QueueRoute(_Route):
    """Play ``prompt``, then queue the caller for an agent (acd/). Priority: ``priority`` plus what the
    caller's customer value tier adds; ``skills`` are attached to the call (language, intent)."""

    action: Literal["queue"]
    queue: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    priority: int = Field(0, ge=0, le=99)
    tier_priority: dict[str, int] = Field(default_factory=lambda: {"silver": 1, "gold": 3, "vip": 10})
    skills: dict[str, int] = Field(default_factory=dict)
    goodbye_prompt: str = "unavailable"
    voicemail_prompt: str = "leave_message"
    voicemail_seconds: float = Field(60.0, gt=0, le=600)

    _levels = field_validator("skills")(check_levels)


class FlowRoute(_Route):
    """Run an IVR flow of sip_config/ivr/ (docs/ivr.md); ``prompt`` is not used (the flow speaks)."""

    action: Literal["flow"]
    flow: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    prompt: str = ""


Route = Annotated[Union[GreetingRoute, BridgeRoute, LoopRoute, QueueRoute, FlowRoute], Field(discriminator="action")]


class DialPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    route: list[Route] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "DialPlan":
        seen: set[str] = set()
        for r in self.route:
            if r.number in seen:
                raise ValueError(f"number {r.number!r} has two routes")
            seen.add(r.number)
        return self

    def match(self, dialed: str) -> Route | None:
        default = None
        for r in self.route:
            if r.number == dialed:
                return r
            if r.number == "*":
                default = r
        return default

    def flows_used(self) -> set[str]:
        return {r.flow for r in self.route if isinstance(r, FlowRoute)}

    def prompts_used(self) -> set[str]:
        names: set[str] = set()
        for r in self.route:
            if r.prompt:
                names.add(r.prompt)
            for extra in ("then_prompt", "fallback_prompt", "goodbye_prompt", "voicemail_prompt"):
                v = getattr(r, extra, None)
                if v:
                    names.add(v)
        return names


def load_dialplan(path: Path, known_prompts: set[str] | None = None) -> DialPlan:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        plan = DialPlan.model_validate(data)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such dial plan") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        lines = [f"{path}: invalid dial plan"]
        for e in exc.errors():
            lines.append(f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from None
    if known_prompts is not None:
        missing = plan.prompts_used() - known_prompts
        if missing:
            raise ConfigError(f"{path}: routes use prompts not defined in the prompts file: {sorted(missing)}")
    return plan
