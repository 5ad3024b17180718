"""Strict YAML reading and scalar formatting.

What the strict loader accepts (config/applied_multipliers.yaml and config/calibration.yaml):
- safe_load semantics: no tag builds an object;
- no duplicate mapping keys, no aliases (`*name`): an alias bomb ("billion laughs") is refused
  before anything is expanded, and nothing reads the same node twice;
- plain scalars resolved by the YAML 1.2 core schema restricted to decimal numbers: `true`/`false`,
  `null`/`~`, `12`, `-1.5`, `2e0`, `.inf`, `.nan`. YAML 1.1's `yes`/`on`, `1:30` (sexagesimal), `1_0`,
  `0x1`, `0o7`, dates and the `<<` merge key are plain strings, so a number field refuses them;
- integers of more than 4300 digits are refused in one line (Python will not convert them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from calreport.errors import CalreportError, excerpt
from calreport.store.files import read_input

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present: ~10x faster

MAX_INT_DIGITS = 4300  # Python's default int <-> str conversion limit
_INT_RE = re.compile(r"^[-+]?[0-9]+$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")


class _StrictLoader(_Base):  # type: ignore[valid-type,misc]
    """Safe loading (no tags that build objects) that refuses duplicate keys and aliases, and
    resolves plain scalars by the YAML 1.2 core schema with decimal numbers only."""

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _refuse_aliases(node)
        return node


def _refuse_aliases(root: yaml.Node) -> None:
    """An alias makes the composed graph share a node: refuse the first node reached twice."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in this file; write the value out", node.start_mark
            )
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                stack.extend((key_node, value_node))


for _tag, _regex, _first in (
    ("tag:yaml.org,2002:bool", _BOOL_RE, "tTfF"),
    ("tag:yaml.org,2002:null", _NULL_RE, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", _INT_RE, "-+0123456789"),
    ("tag:yaml.org,2002:float", _FLOAT_RE, "-+0123456789."),
):
    _StrictLoader.add_implicit_resolver(_tag, _regex, list(_first))


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if not _INT_RE.match(text):
        raise yaml.constructor.ConstructorError(None, None, f"not a decimal integer: {excerpt(text, 40)}", node.start_mark)
    digits = len(text.lstrip("+-"))
    if digits > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"integer of {digits} digits (at most {MAX_INT_DIGITS})", node.start_mark
        )
    return int(text)


def _construct_float(loader: _StrictLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node)
    if not _FLOAT_RE.match(text):
        raise yaml.constructor.ConstructorError(None, None, f"not a decimal number: {excerpt(text, 40)}", node.start_mark)
    return float(text.lower().replace(".inf", "inf").replace(".nan", "nan"))


def _construct_bool(loader: _StrictLoader, node: yaml.ScalarNode) -> bool:
    text = loader.construct_scalar(node)
    if not _BOOL_RE.match(text):
        raise yaml.constructor.ConstructorError(None, None, f"not true or false: {excerpt(text, 40)}", node.start_mark)
    return text.lower() == "true"


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {excerpt(key, 60)}", key_node.start_mark
            ) from None
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {excerpt(key, 60)} (line {key_node.start_mark.line + 1})", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def loads_strict(text: str, path: Path | str) -> Any:
    """Parse YAML text; any problem becomes a one-line CalreportError naming `path`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        text_ = f"{context}: {problem}" if context and problem else problem
        raise CalreportError(f"invalid YAML{where}: {_cap(text_)}", path) from None
    except RecursionError:
        raise CalreportError("invalid YAML: nested too deeply", path) from None
    except ValueError as exc:  # a constructor's conversion (defence in depth: the checks above come first)
        raise CalreportError(f"invalid YAML: {_cap(str(exc))}", path) from None


def _cap(text: str, limit: int = 200) -> str:
    """Parser messages can quote input (a tag, a token): keep them short."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_strict(path: Path) -> Any:
    raw = read_input(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CalreportError(f"not UTF-8 text (byte {exc.start})", path) from None
    return loads_strict(text, path)


def scalar(value: str | None) -> str:
    """Format a string as a YAML scalar: plain when safe, quoted when it would be misread."""
    if value is None:
        return "null"
    dumped = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
    dumped = dumped.rstrip("\n")
    if dumped.endswith("\n..."):
        dumped = dumped[: -len("\n...")]
    dumped = dumped.strip()
    # PyYAML quotes by YAML 1.1's rules; the strict reader resolves by 1.2's (`1e3` is a number
    # there, not in 1.1): when the plain form would not read back as this string, double-quote it
    try:
        if loads_strict(f"v: {dumped}", "<scalar>") == {"v": value}:
            return dumped
    except CalreportError:
        pass
    return json.dumps(value)


def validation_problem(exc: Exception) -> str:
    """One line from a pydantic ValidationError: 'underlyings.BTC.global: multiplier must be ...'."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors()[:3]:
            loc = ".".join(str(p) if len(str(p)) <= 40 else excerpt(str(p), 40) for p in err.get("loc", ()))
            msg = _cap(str(err.get("msg", "")).removeprefix("Value error, "), 160)
            if err.get("type") == "extra_forbidden":
                msg = "unknown key (misspelt?)"
            elif str(err.get("type", "")).endswith("_type") or err.get("type") == "finite_number":
                value = err.get("input")  # a strict type refused it: say what was written (bounded)
                msg += f", got {type(value).__name__} {excerpt(value, 40)}"
            parts.append(f"{loc}: {msg}" if loc else msg)
        more = len(errors()) - 3
        return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    return _cap(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
