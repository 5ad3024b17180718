"""Strict YAML reading (safe_load semantics, duplicate keys are errors) and scalar formatting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from calreport.errors import CalreportError
from calreport.store.files import read_input

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present: ~10x faster


class _StrictLoader(_Base):  # type: ignore[valid-type,misc]
    """Safe loading (no tags that build objects) that refuses duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark
            ) from None
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", key_node.start_mark
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
        raise CalreportError(f"invalid YAML{where}: {text_}", path) from None


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
    return dumped.strip()


def validation_problem(exc: Exception) -> str:
    """One line from a pydantic ValidationError: 'underlyings.BTC.global: multiplier must be ...'."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors()[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown key (misspelt?)"
            parts.append(f"{loc}: {msg}" if loc else msg)
        more = len(errors()) - 3
        return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    return str(exc).splitlines()[0]
