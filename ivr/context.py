"""A call's variables while it is in the IVR: ``call.*`` (numbers), ``customer.*`` once identified,
what lookups, menus and collections stored. Templates name them as ``{customer.first_name}``; a
template that is exactly one variable keeps the value's type (a number stays a number)."""

from __future__ import annotations

from typing import Any

from ivr.flow_model import TEMPLATE


class CallContext:
    def __init__(self, **namespaces: dict[str, Any]):
        self.vars: dict[str, Any] = {k: dict(v) for k, v in namespaces.items()}

    def get(self, path: str, default: Any = None) -> Any:
        cur: Any = self.vars
        for part in path.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return default
            cur = cur[part]
        return cur

    def set(self, path: str, value: Any) -> None:
        parts = path.split(".")
        cur = self.vars
        for part in parts[:-1]:
            nxt = cur.get(part)
            if not isinstance(nxt, dict):
                nxt = cur[part] = {}
            cur = nxt
        cur[parts[-1]] = value

    def render(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        whole = TEMPLATE.fullmatch(value)
        if whole:
            return self.get(whole[1], "")
        return TEMPLATE.sub(lambda m: _text(self.get(m[1], "")), value)


def _text(v: Any) -> str:
    return "" if v is None else str(v)
