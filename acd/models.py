"""ACD configuration as validated data (pydantic, strict, unknown keys refused)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, field_validator, model_validator

from acd.routing import RoutingError, Step, validate
from acd.strategies import Strategy

NAME = r"^[a-z][a-z0-9_.-]*$"
PROMPT = r"^[a-z0-9_]{1,64}$"  # a prompt's name in sip_config/prompts.toml, never a path


def _whole(v: object) -> object:
    """JSON has one kind of number: 3.0 is the integer 3 (JSON Schema agrees); 3.5 stays refused."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**63 else v


# An integer field of a request body: Annotated[int, Field(<bounds>), WHOLE]. The bounds come
# before the validator: so placed, pydantic writes them into the JSON schema as JSON Schema's own
# keywords (after it, as "ge"/"le", which no JSON Schema tool reads).
WHOLE = BeforeValidator(_whole)
Proficiency = Annotated[int, Field(ge=1, le=5), WHOLE]  # of a skill


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RoutingStep(_Strict):
    after: float = Field(ge=0)
    require: dict[str, Proficiency] = Field(default_factory=dict)


class Overflow(_Strict):
    kind: Literal["queue", "voicemail", "callback", "hangup"] = "hangup"
    target: str = Field("", pattern=r"^([a-z][a-z0-9_.-]*)?$", max_length=64)  # queue name for kind "queue"

    @model_validator(mode="after")
    def _target(self) -> "Overflow":
        if self.kind == "queue" and not self.target:
            raise ValueError("overflow to a queue needs a target queue")
        return self


class QueueSettings(_Strict):
    strategy: Strategy = Strategy.LONGEST_IDLE
    service_level: float = Field(20.0, gt=0, le=3600, description="seconds to answer within")
    ring_timeout: float = Field(15.0, gt=0, le=120)
    wrap_up: float = Field(10.0, ge=0, le=3600)
    wrap_up_extend_max: float = Field(60.0, ge=0, le=3600)
    max_wait: float = Field(600.0, gt=0, le=86400)
    max_callers: Annotated[int, Field(ge=1, le=10000), WHOLE] = 50
    no_agents: Literal["wait", "exit"] = "exit"
    overflow: Overflow = Overflow()
    hold_prompt: str = Field("hold_loop", pattern=PROMPT)
    announce_every: float = Field(60.0, ge=0, le=3600, description="0: no announcements")
    exit_key: str = Field("", pattern=r"^[0-9*#]?$")
    # Virtual hold: the caller presses this key, hangs up, keeps their place and is called back.
    callback_key: str = Field("", pattern=r"^[0-9*#]?$")
    callback_retries: Annotated[int, Field(ge=1, le=10), WHOLE] = Field(3, description="tries to reach the caller")
    callback_interval: float = Field(60.0, ge=1, le=3600, description="seconds between attempts")
    callback_ring_timeout: float = Field(30.0, gt=0, le=120)
    routing: list[RoutingStep] = Field(default_factory=lambda: [RoutingStep(after=0)])
    # The IVR flow (sip_config/ivr/) the caller goes to when the agent hangs up first; "": none.
    survey: str = Field("", pattern=r"^([A-Za-z_][A-Za-z0-9_.-]{0,63})?$")

    @model_validator(mode="after")
    def _keys(self) -> "QueueSettings":
        if self.exit_key and self.exit_key == self.callback_key:
            raise ValueError("exit_key and callback_key must differ")
        return self

    @field_validator("routing")
    @classmethod
    def _steps(cls, v: list[RoutingStep]) -> list[RoutingStep]:
        try:
            validate([Step(s.after, s.require) for s in v])
        except RoutingError as exc:
            raise ValueError(str(exc)) from None
        return v


class QueueIn(_Strict):
    name: str = Field(pattern=NAME, max_length=64)
    title: str = ""
    settings: QueueSettings = QueueSettings()


class AgentIn(_Strict):
    login: str = Field(pattern=NAME, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    extension: str | None = Field(None, pattern=r"^[0-9]{2,8}$")
    sip_uri: str | None = Field(None, pattern=r"^sips?:[^\s]+$")


def check_levels(skills: dict[str, int]) -> dict[str, int]:
    """Skill proficiencies are 1..5 (agents' skills, and skills the IVR attaches to a call)."""
    for skill, level in skills.items():
        if not 1 <= level <= 5:
            raise ValueError(f"{skill}: proficiency must be 1..5, got {level}")
    return skills


class SipPasswordIn(_Strict):
    password: str | None = Field(None, pattern=r"^[ -~]{12,128}$", description="printable ASCII; omit: one is made")


class SkillIn(_Strict):
    name: str = Field(pattern=NAME, max_length=64)


class SkillsIn(_Strict):
    skills: dict[str, Proficiency]


class Member(_Strict):
    agent: str = Field(pattern=NAME)
    penalty: Annotated[int, Field(ge=0, le=100), WHOLE] = 0


class MembersIn(_Strict):
    members: list[Member]


class _Available(_Strict):
    status: Literal["available"]
    reason: Literal[""] = ""


class _NotReady(_Strict):
    status: Literal["not_ready"]
    reason: str = Field(pattern=NAME, max_length=64, description="a not-ready reason code")


class _LoggedOut(_Strict):
    status: Literal["logged_out"]
    reason: Literal[""] = ""


class StatusIn(RootModel[Annotated[_Available | _NotReady | _LoggedOut, Field(discriminator="status")]]):
    """available, not_ready with a reason code, or logged_out."""

    @property
    def status(self) -> str:
        return self.root.status

    @property
    def reason(self) -> str:
        return self.root.reason


class WrapUpIn(_Strict):
    action: Literal["end", "extend"]
    seconds: float = Field(30.0, gt=0, le=3600, description="for extend")
