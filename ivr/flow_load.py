"""Loading and checking the flows (sip_config/ivr/*.yaml) and calendars before any call uses them.

Every problem names the file, the line, the node and what is wrong: unknown node types or fields,
exits to nodes that do not exist, nodes nothing leads to, loops that can go round without the
caller (no input, no exit), prompts the prompts file does not define, bad key maps, calendars and
flows that do not exist. A set with any problem is refused as a whole (ivr/library.py keeps the
previous one).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from ivr import flow_model as fm
from ivr.calendar import Calendars

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    node: str
    message: str
    what: str = "node"  # what ``node`` names: a node, or a calendar

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.what + ' ' + repr(self.node) + ': ' if self.node else ''}{self.message}"


class FlowError(Exception):
    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class FlowSet:
    """One consistent version of every flow and calendar. A call keeps the set it started with."""

    flows: dict[str, fm.Flow]
    calendars: Calendars
    version: int = 0  # from the files' contents: the same files are the same version, on every node
    files: dict[str, str] = field(default_factory=dict)  # flow -> file it came from


# ---------------------------------------------------------------- YAML with line numbers


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true and false. YAML 1.1 also reads yes, no, on and off as booleans,
    so a node named ``no`` or a phrase "yes" would silently become False or True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def read_yaml(path: Path) -> tuple[Any, dict[Path_, int]]:
    """The document and the line (1-based) of every mapping key and sequence item, by its path."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError([Problem(str(path), 0, "", f"cannot read: {exc}")]) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise FlowError([Problem(str(path), mark.line + 1 if mark else 0, "", f"not valid YAML: "
                                 f"{getattr(exc, 'problem', None) or exc}")]) from None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    if node is not None:
        _lines(node, (), lines)
    return data, lines


def _lines(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*path, key)] = k.start_mark.line + 1
            _lines(v, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def _line_of(loc: Path_, data: Any, lines: dict[Path_, int]) -> int:
    """The line of the deepest part of a pydantic error location that is in the document (pydantic
    puts the union's tag and its own labels in between)."""
    path: Path_ = ()
    cur = data
    for part in loc:
        key: str | int | None = None
        if isinstance(cur, dict):
            key = part if part in cur else next((k for k in cur if str(k) == str(part)), None)
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            key = part
        if key is None:
            continue
        path = (*path, key)
        cur = cur[key]
    return lines.get(path, lines.get((), 0))


def _validation_problems(file: str, exc: ValidationError, data: Any, lines: dict[Path_, int],
                         node_key: str = "nodes") -> list[Problem]:
    out = []
    for e in exc.errors():
        loc = tuple(e["loc"])
        node = str(loc[1]) if len(loc) > 1 and loc[0] == node_key else ""
        shown = [str(p) for p in loc[2:] if not _is_tag(p)] if node else [str(p) for p in loc]
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown node type {e.get('input', {}).get('type')!r}" if isinstance(e.get("input"), dict) else msg
        elif e["type"] == "union_tag_not_found":
            msg = "a node needs a type"
        out.append(Problem(file, _line_of(loc, data, lines), node, f"{'.'.join(shown) + ': ' if shown else ''}{msg}",
                           "node" if node_key == "nodes" else "calendar"))
    return out


# The node types (pydantic names a union member by its tag in an error's location).
_TAGS = {tag for cls in get_args(get_args(fm.Node)[0]) for tag in get_args(cls.model_fields["type"].annotation)}


def _is_tag(part: str | int) -> bool:
    return isinstance(part, str) and (part in _TAGS or part.startswith(("function-", "list[", "dict[")))


# ---------------------------------------------------------------- one flow


def parse_flow(path: Path) -> tuple[fm.Flow | None, list[Problem], dict[Path_, int]]:
    file = str(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        return None, [Problem(file, 1, "", "a flow file is a mapping with flow, start and nodes")], lines
    try:
        flow = fm.Flow.model_validate(data)
    except ValidationError as exc:
        return None, _validation_problems(file, exc, data, lines), lines
    if flow.flow != path.stem:
        return None, [Problem(file, lines.get(("flow",), 1), "", f"flow {flow.flow!r} is in a file named "
                              f"{path.name!r}: name the file {flow.flow}.yaml")], lines
    return flow, [], lines


def check_flow(file: str, flow: fm.Flow, lines: dict[Path_, int], prompts: set[str] | None,
               calendars: Calendars) -> list[Problem]:
    """The checks a single node cannot make: exits, reachability, loops without the caller, names."""
    out: list[Problem] = []

    def line(node: str, *rest: str | int) -> int:
        return lines.get(("nodes", node, *rest), lines.get(("nodes", node), 0))

    if flow.start not in flow.nodes:
        out.append(Problem(file, lines.get(("start",), 0), "", f"start node {flow.start!r} does not exist"))
    for name, node in flow.nodes.items():
        for exit_name, target in node.targets().items():
            if target is not None and target not in flow.nodes:
                out.append(Problem(file, line(name), name, f"{exit_name} goes to {target!r}, which does not exist"))
        if prompts is not None:
            for p in sorted(node.prompts() - prompts):
                out.append(Problem(file, line(name), name, f"prompt {p!r} is not in the prompts file"))
        for cal in sorted(_calendars_named(node)):
            if cal not in calendars.calendars:
                out.append(Problem(file, line(name), name, f"calendar {cal!r} is not in calendars.yaml"))
    if out:
        return out
    for cycle in _silent_cycles(flow):
        out.append(Problem(file, line(cycle[0]), cycle[0], "loop without input or exit: "
                           + " -> ".join([*cycle, cycle[0]])))
    return out


def _calendars_named(node: BaseModel) -> set[str]:
    out: set[str] = set()
    for cond in _conditions(node):
        for attr in ("open", "holiday"):
            if getattr(cond, attr):
                out.add(getattr(cond, attr))
    return out


def _conditions(node: BaseModel) -> Iterator[fm.Condition]:
    if isinstance(node, fm.ConditionNode):
        stack = [b.when for b in node.branches]
        while stack:
            c = stack.pop()
            yield c
            stack.extend(c.all or [])
            stack.extend(c.any or [])
            if c.not_ is not None:
                stack.append(c.not_)


def _unreachable(file: str, flow: fm.Flow, lines: dict[Path_, int], entries: set[str]) -> list[Problem]:
    """Nodes that neither the start nor another flow's goto (``entries``) leads to."""
    seen = {flow.start} | entries
    todo = list(seen)
    while todo:
        for t in flow.nodes[todo.pop()].targets().values():
            if t is not None and t not in seen:
                seen.add(t)
                todo.append(t)
    return [Problem(file, lines.get(("nodes", n), 0), n, "nothing leads to this node") for n in flow.nodes
            if n not in seen]


def _silent_cycles(flow: fm.Flow) -> list[list[str]]:
    """Cycles through nodes none of which waits for the caller (depth-first search on the graph of
    such nodes); each cycle is reported once, from its first node in file order."""
    silent = {n for n, node in flow.nodes.items() if not node.waits_for_input}
    edges = {n: [t for t in flow.nodes[n].targets().values() if t in silent] for n in silent}
    cycles: list[list[str]] = []
    seen_sets: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        stack.append(n)
        for t in edges[n]:
            if state.get(t) == 1:
                cyc = stack[stack.index(t):]
                if frozenset(cyc) not in seen_sets:
                    seen_sets.add(frozenset(cyc))
                    cycles.append(cyc)
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[n] = 2

    for n in flow.nodes:
        if n in silent and n not in state:
            visit(n, [])
    return cycles


# ---------------------------------------------------------------- the whole set


def load_calendars(path: Path | None) -> tuple[Calendars, list[Problem]]:
    if path is None or not path.exists():
        return Calendars(), []
    try:
        data, lines = read_yaml(path)
    except FlowError as exc:
        return Calendars(), exc.problems
    try:
        return Calendars.model_validate(data or {}), []
    except ValidationError as exc:
        return Calendars(), _validation_problems(str(path), exc, data, lines, node_key="calendars")


def load_flows(folder: Path, prompts: set[str] | None, calendars_path: Path | None = None) -> FlowSet:
    """Every flow of ``folder`` and the calendars, checked together; FlowError lists every problem."""
    calendars, problems = load_calendars(calendars_path)
    flows: dict[str, fm.Flow] = {}
    files: dict[str, str] = {}
    all_lines: dict[str, dict[Path_, int]] = {}
    paths = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not folder.is_dir():
        problems.append(Problem(str(folder), 0, "", "no such folder of flows"))
    for path in paths:
        try:
            flow, found, lines = parse_flow(path)
        except FlowError as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(found)
        if flow is not None:
            problems.extend(check_flow(str(path), flow, lines, prompts, calendars))
            flows[flow.flow] = flow
            files[flow.flow] = str(path)
            all_lines[flow.flow] = lines
    entries: dict[str, set[str]] = {name: set() for name in flows}
    for name, flow in flows.items():
        for node_name, node in flow.nodes.items():
            if isinstance(node, fm.SubFlow | fm.Goto):
                line = all_lines[name].get(("nodes", node_name), 0)
                other = flows.get(node.flow)
                if other is None:
                    problems.append(Problem(files[name], line, node_name, f"flow {node.flow!r} does not exist"))
                elif isinstance(node, fm.Goto) and node.node and node.node not in other.nodes:
                    problems.append(Problem(files[name], line, node_name,
                                            f"flow {node.flow!r} has no node {node.node!r}"))
                elif isinstance(node, fm.Goto) and node.node:
                    entries[node.flow].add(node.node)
                elif isinstance(node, fm.SubFlow) and not any(isinstance(n, fm.Return) for n in other.nodes.values()):
                    problems.append(Problem(files[name], line, node_name,
                                            f"flow {node.flow!r} has no return node to come back from"))
    if not problems:
        for name, flow in flows.items():
            problems.extend(_unreachable(files[name], flow, all_lines[name], entries[name]))
    if problems:
        raise FlowError(problems)
    digest = hashlib.sha256()
    for path in [*paths, *([calendars_path] if calendars_path and calendars_path.exists() else [])]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return FlowSet(flows, calendars, version=int(digest.hexdigest()[:13], 16), files=files)
