"""Reading journey files (YAML or JSON) into plain JSON data, safely; canonical forms.

Files are hostile input: a size cap, YAML `safe_load` semantics only, no YAML 1.1 surprises
(`on:` stays the word "on", `9:30` stays a string, dates stay strings), no duplicate keys, a
bound on nesting and on the values an alias-laden document expands to. What comes out is
JSON-ready: string keys, finite numbers in 64 bits, no NUL characters (PostgreSQL refuses
them in JSON).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import yaml

from cadenza.errors import PayloadTooLarge, ValidationFailed

MAX_BYTES = 1_000_000
"""Largest journey file accepted (a large real journey is a few tens of kilobytes)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted."""
MAX_VALUES = 100_000
"""Most values (scalars, lists, mappings) a document may hold once its aliases are expanded."""

_INT_LIMIT = 2**63


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars and no duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "keys must be plain words, not lists or mappings",
                    key_node.start_mark)
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key_node.value!r} appears twice in the same mapping",
                    key_node.start_mark)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes exactly what `_Loader` would not read back as a string."""


_RESOLVERS: tuple[tuple[str, str, str], ...] = (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    ("tag:yaml.org,2002:int", r"^[-+]?[0-9]+$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+)$",
     "-+.0123456789"),
)

for _cls in (_Loader, _Dumper):
    _cls.yaml_implicit_resolvers = {}
    for _tag, _pattern, _first in _RESOLVERS:
        _cls.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
    # The empty scalar is null too (`key:` with nothing after it).
    _cls.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])


def _decimal_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    return int(str(loader.construct_scalar(node)).replace("_", ""), 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _decimal_int)  # "09" is 9, not bad octal


def load_journey(text: str | bytes) -> dict[str, Any]:
    """The definition in a journey file (YAML or JSON) as JSON data; ValidationFailed (or
    PayloadTooLarge) with the line and column of what could not be read."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise _too_large(len(text))
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationFailed("file", f"is not UTF-8 text (byte {exc.start} is "
                                   "not valid); save it as UTF-8") from None
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_BYTES:
        raise _too_large(size)
    stripped = text.lstrip()
    value: Any
    if stripped.startswith(("{", "[")):
        try:
            value = _load_json(text)
        except ValidationFailed as json_error:
            try:  # a YAML flow mapping also starts with "{"
                value = _load_yaml(text)
            except ValidationFailed:
                raise json_error from None
    else:
        value = _load_yaml(text)
    if not isinstance(value, dict):
        raise ValidationFailed("file", "must be a mapping with journey, entry and steps "
                               "(see docs/journeys.md)")
    check_json_data(value)
    return value


def _too_large(size: int) -> PayloadTooLarge:
    return PayloadTooLarge("file", f"is {size:,} bytes; a journey file may have at most "
                           f"{MAX_BYTES:,} (split it, or move long texts into templates)")


def _load_json(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise ValidationFailed("json", f"key {key!r} appears twice in the same object")
            result[key] = value
        return result

    def constant(name: str) -> Any:
        raise ValidationFailed("json", f"{name} is not a number journeys accept")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise ValidationFailed("json", f"line {exc.lineno}, column {exc.colno}: "
                               f"{exc.msg}") from None
    except RecursionError:
        raise _too_deep("json") from None


def _load_yaml(text: str) -> Any:
    try:
        _check_events(text)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "cannot be read"
        raise ValidationFailed("yaml", f"{where}{problem}") from None
    except yaml.YAMLError as exc:
        raise ValidationFailed("yaml", str(exc)) from None
    except (ValueError, OverflowError) as exc:
        raise ValidationFailed("yaml", f"a value cannot be read: {exc}") from None
    except RecursionError:
        raise _too_deep("yaml") from None


def _check_events(text: str) -> None:
    """Refuse over-deep documents before the (recursive) composer sees them."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep("yaml", event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _too_deep(field: str, mark: Any = None) -> ValidationFailed:
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return ValidationFailed(field, f"{where}nested more than {MAX_DEPTH} levels deep; a "
                            "journey needs far fewer")


def check_json_data(value: Any) -> None:
    """Refuse what is not plain JSON data (or is too deep, too big once aliases are expanded,
    or holds NUL characters, 64-bit-overflowing integers or non-finite numbers)."""
    budget = MAX_VALUES
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise ValidationFailed("file", f"holds more than {MAX_VALUES:,} values once its "
                                   "aliases are expanded; write it out plainly")
        if depth > MAX_DEPTH:
            raise _too_deep(path or "file")
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ValidationFailed(path or "file", f"key {key!r} is not a string; "
                                           "quote it")
                if "\x00" in key:
                    raise ValidationFailed(path or "file", "a key contains a NUL character")
                stack.append((sub, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(item, list):
            for index, sub in enumerate(item):
                stack.append((sub, f"{path}.{index}" if path else str(index), depth + 1))
        elif isinstance(item, str):
            if "\x00" in item:
                raise ValidationFailed(path, "contains a NUL character")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -_INT_LIMIT <= item < _INT_LIMIT:
                raise ValidationFailed(path, f"{item} does not fit in 64 bits")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValidationFailed(path, "must be a finite number")
        else:
            raise ValidationFailed(path, f"is a {type(item).__name__}; journey files hold "
                                   "only strings, numbers, true/false, null, lists and "
                                   "mappings (quote dates and times)")


def canonical_json(definition: Any) -> str:
    """One text per definition, whatever its key order or spacing (what `content_hash`
    hashes)."""
    return json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def content_hash(definition: Any) -> str:
    """sha256 (hex) of the canonical JSON of a definition."""
    return hashlib.sha256(canonical_json(definition).encode()).hexdigest()


def definition_yaml(definition: Any) -> str:
    """A definition as YAML (keys sorted, as `diff` compares them); `load_journey` reads it
    back to the same data."""
    return yaml.dump(definition, Dumper=_Dumper, sort_keys=True, allow_unicode=True,
                     default_flow_style=False, width=100)
