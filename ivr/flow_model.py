"""The flow format (docs/ivr.md): one YAML file per flow under sip_config/ivr/, as strict pydantic
models. A flow is a start node and named nodes; each node's type fixes its fields and its exits
(``targets``), which name other nodes of the same flow. Unknown types and fields are refused.

Values that depend on the call are templates: ``"{customer.first_name}"`` is a variable of the
call's context (ivr/context.py); nothing is evaluated as code.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ivr.calendar import zone

NODE = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
PROMPT = r"^[a-z0-9_]{1,64}$"  # a prompt of sip_config/prompts.toml, never a path
VAR = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$"
QUEUE = r"^[a-z][a-z0-9_.-]*$"
KEYS = "0123456789*#"
TEMPLATE = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)\}")

NodeName = Annotated[str, Field(pattern=NODE)]
PromptName = Annotated[str, Field(pattern=PROMPT)]
VarName = Annotated[str, Field(pattern=VAR)]


def _key(v: object) -> object:
    """YAML reads ``key: 1`` as the integer 1: a menu key is the text."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


Key = Annotated[str, BeforeValidator(_key), Field(pattern=r"^[0-9*#]$")]
Seconds = Annotated[float, Field(gt=0, le=120)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- conditions


class Condition(_Strict):
    """Exactly one test: a variable compared (``var`` with one of equals, in, gt, ge, lt, le,
    exists), business hours (``open``), a holiday (``holiday``), the time of day (``time``), queue
    state (``agents_available``, ``wait_under``), or ``all`` / ``any`` / ``not`` of conditions."""

    var: VarName | None = None
    equals: str | int | float | bool | None = None
    in_: list[str | int | float] | None = Field(None, alias="in")
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    exists: bool | None = None
    open: str | None = Field(None, pattern=QUEUE)  # a calendar of calendars.yaml: open now
    holiday: str | None = Field(None, pattern=QUEUE)  # a calendar: today is one of its holidays
    time: TimeWindow | None = None
    agents_available: str | None = Field(None, pattern=QUEUE)  # a queue with an agent ready now
    wait_under: WaitUnder | None = None
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(None, alias="not")

    @model_validator(mode="after")
    def _one_test(self) -> "Condition":
        tests = [n for n in ("var", "open", "holiday", "time", "agents_available", "wait_under", "all", "any",
                             "not_") if getattr(self, n) is not None]
        if len(tests) != 1:
            raise ValueError("a condition has exactly one of var, open, holiday, time, agents_available, "
                             f"wait_under, all, any, not (got {', '.join(tests) or 'none'})")
        ops = [n for n in ("equals", "in_", "gt", "ge", "lt", "le", "exists") if getattr(self, n) is not None]
        if self.var is not None and len(ops) != 1:
            raise ValueError("var needs exactly one of equals, in, gt, ge, lt, le, exists")
        if self.var is None and ops:
            raise ValueError(f"{ops[0].rstrip('_')} goes with var")
        return self


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class TimeWindow(_Strict):
    from_: dt.time = Field(alias="from")
    to: dt.time
    days: list[Day] = Field(default_factory=lambda: list(ALL_DAYS))
    timezone: str = ""  # "" : the flow's

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        if v:
            zone(v)
        return v


class WaitUnder(_Strict):
    queue: str = Field(pattern=QUEUE)
    seconds: float = Field(gt=0, le=86400)


class Branch(_Strict):
    when: Condition
    goto: NodeName


# ---------------------------------------------------------------- nodes


class _Node(_Strict):
    description: str = ""

    def targets(self) -> dict[str, str | None]:
        """Exit name -> the node it leads to (None: that exit ends the flow)."""
        return {}

    def prompts(self) -> set[str]:
        return {v for n, v in self if n.endswith("prompt") and isinstance(v, str) and v}

    @property
    def waits_for_input(self) -> bool:
        """A node that waits for the caller: a cycle through one cannot spin without them."""
        return False


class _Next(_Node):
    next: NodeName | None = None  # None: the flow ends after this node (the call is hung up)

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next}


class Play(_Next):
    """A prompt, or a text spoken by the prompt voice; ``interrupt``: a key cuts it short."""

    type: Literal["play"]
    prompt: PromptName | None = None
    text: str | None = Field(None, min_length=1, max_length=500)
    interrupt: bool = False

    @model_validator(mode="after")
    def _one(self) -> "Play":
        if (self.prompt is None) == (self.text is None):
            raise ValueError("play needs exactly one of prompt, text")
        return self


class SayPart(_Strict):
    """One piece of a ``say``: a prompt, or a value read out by kind."""

    prompt: PromptName | None = None
    number: str | int | float | None = None
    money: str | int | float | None = None
    digits: str | int | None = None
    date: str | dt.date | None = None
    time: str | dt.time | None = None
    currency: str = Field("USD", pattern=r"^([A-Z]{3}|\{[a-z_][a-z0-9_.]*\})$")  # a code or a template

    @model_validator(mode="after")
    def _one(self) -> "SayPart":
        kinds = [k for k in ("prompt", "number", "money", "digits", "date", "time") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a say part has exactly one of prompt, number, money, digits, date, time (got "
                             f"{', '.join(kinds) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("prompt", "number", "money", "digits", "date", "time") if getattr(self, k) is not None)


class Say(_Next):
    """Read prompts and values out as one prompt (numbers, amounts of money, digit strings, dates, times)."""

    type: Literal["say"]
    parts: list[SayPart] = Field(min_length=1, max_length=20)
    interrupt: bool = False

    def prompts(self) -> set[str]:
        return {p.prompt for p in self.parts if p.prompt}


class Choice(_Strict):
    key: Key | None = None
    phrases: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(default_factory=list, max_length=8)
    goto: NodeName
    value: str = ""  # stored in the menu's ``var`` (default: the key, else the first phrase)

    @model_validator(mode="after")
    def _some(self) -> "Choice":
        if self.key is None and not self.phrases:
            raise ValueError("a choice needs a key, phrases or both")
        return self


class _Asks(_Node):
    """What every node that asks the caller shares: how long to wait, what to say on no input or a
    wrong answer, how many tries, and where to go when they are used up."""

    timeout: Seconds = 5.0  # for the first key (or speech) after the prompt
    retries: int = Field(2, ge=0, le=5)  # tries after the first
    no_input_prompt: PromptName | None = "no_input"
    invalid_prompt: PromptName | None = "invalid_entry"
    fallback: NodeName | None = None  # tries used up (None: the flow ends)

    @property
    def waits_for_input(self) -> bool:
        return True


class Menu(_Asks):
    """Keys and/or phrases (speech, when any choice has phrases), whichever comes first."""

    type: Literal["menu"]
    prompt: PromptName
    choices: list[Choice] = Field(min_length=1, max_length=12)
    var: VarName | None = None

    @field_validator("choices")
    @classmethod
    def _distinct(cls, v: list[Choice]) -> list[Choice]:
        keys = [c.key for c in v if c.key is not None]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"key {sorted(dup)[0]!r} is used by two choices")
        phrases = [p for c in v for p in c.phrases]
        dup = {p for p in phrases if phrases.count(p) > 1}
        if dup:
            raise ValueError(f"phrase {sorted(dup)[0]!r} is used by two choices")
        return v

    def targets(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {f"choice {c.key or c.phrases[0]}": c.goto for c in self.choices}
        out["fallback"] = self.fallback
        return out

    @property
    def keys(self) -> str:
        return "".join(c.key for c in self.choices if c.key)

    @property
    def phrases(self) -> list[str]:
        return [p for c in self.choices for p in c.phrases]


class Collect(_Asks):
    """Digits into ``var``: between min and max long, ended by the terminator or a timeout."""

    type: Literal["collect"]
    prompt: PromptName
    var: VarName
    min_length: int = Field(1, ge=1, le=32)
    max_length: int = Field(16, ge=1, le=32)
    terminator: str = Field("#", pattern=r"^[*#]?$")
    inter_timeout: Seconds = 3.0
    validate_as: Literal["none", "luhn", "pin", "account_exists"] = Field("none", alias="validate")
    next: NodeName | None = None

    @model_validator(mode="after")
    def _lengths(self) -> "Collect":
        if self.min_length > self.max_length:
            raise ValueError("min_length is larger than max_length")
        return self

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next, "fallback": self.fallback}


class ConditionNode(_Node):
    """The first branch whose condition holds, else ``otherwise``."""

    type: Literal["condition"]
    branches: list[Branch] = Field(min_length=1, max_length=20)
    otherwise: NodeName | None = Field(None, alias="else")

    def targets(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {f"branch {i + 1}": b.goto for i, b in enumerate(self.branches)}
        out["else"] = self.otherwise
        return out


class SetNode(_Next):
    """Set variables of the call's context (templates allowed); ``attach``: also attach them to the
    call, where the agent's screen and the CTI see them."""

    type: Literal["set"]
    values: dict[VarName, str | int | float | bool] = Field(min_length=1)
    attach: bool = False


class Lookup(_Node):
    """A CRM lookup for the identified customer (or the account in ``account``), stored in ``into``."""

    type: Literal["lookup"]
    query: Literal["balance", "last_order", "open_ticket", "customer"]
    into: VarName | None = None  # default: the query's name
    timeout: float = Field(1.0, gt=0, le=1.0)  # never more than a second of dead air
    found: NodeName | None = None
    empty: NodeName  # no such data (or nobody identified)
    failed: NodeName  # the database failed or was too slow: say so, offer an agent

    def targets(self) -> dict[str, str | None]:
        return {"found": self.found, "empty": self.empty, "failed": self.failed}


class Identify(_Node):
    """The caller's number finds the customer; when several or none share it (or ``require_pin``),
    ask the account number and the PIN. ``next`` once identified, ``failed`` otherwise."""

    type: Literal["identify"]
    require_pin: bool = False
    account_prompt: PromptName = "enter_account"
    pin_prompt: PromptName = "enter_pin"
    wrong_pin_prompt: PromptName = "wrong_pin"
    unknown_account_prompt: PromptName = "unknown_account"
    locked_prompt: PromptName = "account_locked"
    no_input_prompt: PromptName | None = "no_input"
    account_length: int = Field(8, ge=4, le=16)
    pin_length: int = Field(4, ge=4, le=8)
    attempts: int = Field(3, ge=1, le=5)  # wrong PINs (or unknown accounts) before giving up
    timeout: Seconds = 6.0
    next: NodeName | None = None
    failed: NodeName | None = None

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next, "failed": self.failed}

    @property
    def waits_for_input(self) -> bool:
        return True


class CreateTicket(_Node):
    """A new ticket for the identified customer; its number is stored in ``into``."""

    type: Literal["create_ticket"]
    kind: Literal["service_request", "complaint", "inquiry", "incident"] = "incident"
    subject: str = Field(min_length=1, max_length=200)
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    into: VarName = "ticket"
    next: NodeName | None = None
    failed: NodeName  # the database failed, or nobody is identified

    def targets(self) -> dict[str, str | None]:
        return {"next": self.next, "failed": self.failed}


class QueueNode(_Node):
    """To an agent: the queue, skills and intent attached; the customer's value tier adds priority."""

    type: Literal["queue"]
    queue: str = Field(pattern=QUEUE)
    prompt: PromptName | None = None
    priority: int = Field(0, ge=0, le=99)
    tier_priority: dict[str, int] = Field(default_factory=lambda: {"silver": 1, "gold": 3, "vip": 10})
    skills: dict[Annotated[str, Field(pattern=QUEUE)], Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=dict)
    intent: str = Field("", pattern=r"^([a-z][a-z0-9_.-]*)?$")


class Callback(_Node):
    """Keep a place in ``queue`` and be called back at the caller's number; confirm and hang up."""

    type: Literal["callback"]
    queue: str = Field(pattern=QUEUE)
    prompt: PromptName = "callback_confirm"
    intent: str = Field("", pattern=r"^([a-z][a-z0-9_.-]*)?$")


class Voicemail(_Node):
    type: Literal["voicemail"]
    queue: str = Field(pattern=QUEUE)  # whose mailbox
    prompt: PromptName = "leave_message"
    max_seconds: float = Field(60, gt=0, le=600)


class Transfer(_Node):
    """Connect the caller to an outside number (from the caller's worker), then the flow is done."""

    type: Literal["transfer"]
    number: str = Field(pattern=r"^(\+?[0-9]{2,20}|sips?:[^\s]+)$")
    prompt: PromptName | None = None
    ring_timeout: float = Field(30, gt=0, le=120)
    failed: NodeName | None = None

    def targets(self) -> dict[str, str | None]:
        return {"failed": self.failed}


class Question(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    prompt: PromptName
    min: int = Field(ge=0, le=9)
    max: int = Field(ge=0, le=10)  # 10 is read as two keys, 1 0, or spoken
    phrases: dict[str, int] = Field(default_factory=dict)  # spoken answers

    @model_validator(mode="after")
    def _range(self) -> "Question":
        if self.min > self.max:
            raise ValueError("min is larger than max")
        return self


class Survey(_Next):
    """Questions answered by key (or voice); every answer is stored as it is given."""

    type: Literal["survey"]
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    questions: list[Question] = Field(min_length=1, max_length=10)
    timeout: Seconds = 6.0
    retries: int = Field(1, ge=0, le=3)
    invalid_prompt: PromptName | None = "invalid_entry"
    thanks_prompt: PromptName | None = "survey_thanks"

    def prompts(self) -> set[str]:
        return super().prompts() | {q.prompt for q in self.questions}

    @property
    def waits_for_input(self) -> bool:
        return True


class SubFlow(_Next):
    """Run another flow; when it reaches a ``return`` node, go on at ``next``."""

    type: Literal["subflow"]
    flow: str = Field(pattern=NODE)


class Goto(_Node):
    """Go on in another flow, at its start or at ``node``; this flow does not come back."""

    type: Literal["goto"]
    flow: str = Field(pattern=NODE)
    node: NodeName | None = None


class Return(_Node):
    type: Literal["return"]


class Hangup(_Node):
    type: Literal["hangup"]
    prompt: PromptName | None = None
    reason: Literal["served", "error", "closed", "refused"] = "served"


Node = Annotated[Union[Play, Say, Menu, Collect, ConditionNode, SetNode, Lookup, Identify, CreateTicket, QueueNode,
                       Callback, Voicemail, Transfer, Survey, SubFlow, Goto, Return, Hangup],
                 Field(discriminator="type")]
TERMINAL = (QueueNode, Callback, Voicemail, Goto, Return, Hangup)  # nodes with no next node in this flow


class Flow(_Strict):
    flow: str = Field(pattern=NODE)  # the flow's name: the file's name without .yaml
    description: str = ""
    start: NodeName
    timezone: str = "UTC"  # for time conditions; a calendar has its own
    max_steps: int = Field(200, ge=10, le=10000)  # a caller going round in circles is ended kindly
    nodes: dict[NodeName, Node] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        zone(v)
        return v


def template_vars(value: Any) -> list[str]:
    """The variables a template names."""
    return TEMPLATE.findall(value) if isinstance(value, str) else []


Condition.model_rebuild()
