"""The Jinja2 sandbox templates run in: immutable, time-limited and size-limited.

Jinja2's `ImmutableSandboxedEnvironment` already refuses private and dunder attributes and
calls that mutate lists and dicts. A marketing template is also hostile in a second way: it
can ask for a lot of work. This environment adds what stops that:

- a render deadline (`Budget`), checked on every call the template makes, every binary
  operator it uses, every 256 iterations of every `for` loop (loops are rewritten at compile
  time to go through a guard) and, in `Renderer.render`, every output chunk;
- size checks before the operations that multiply text: `'x' * n`, `center`, `ljust`,
  `indent`, `join`, `replace`, width specifiers in `%` and `format`, `tojson(indent=...)`,
  `batch`, and any string argument over the output cap (so recursion that doubles a string
  stops at the cap, not at the machine's memory);
- no `lipsum`, `cycler`, `joiner` or `namespace` globals: they are either generators of
  arbitrary amounts of text or a way to accumulate state across loop iterations.
"""

from __future__ import annotations

import math
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache, wraps
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, nodes
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

_DICT_ATTRIBUTES = frozenset(dir(dict))
GUARD_FILTER = "_cadenza_guard"
"""The filter every `for` loop's iterable is wrapped in (see `Sandbox._parse`)."""
MAX_INDENT = 256
MAX_JSON_INDENT = 16
MAX_FORMAT_WIDTH = 10_000
MAX_POWER_BITS = 100_000


class RenderTimeout(Exception):
    """The render ran past its deadline (internal: `Renderer` turns it into RenderFailed)."""


class TooBig(Exception):
    """An operation would build a value over the output cap (internal, as above)."""


class Budget(threading.local):
    """The deadline and output cap of the render running on this thread."""

    def __init__(self, cap: int = 512 * 1024) -> None:
        # threading.local runs __init__ again, with the same arguments, in every thread.
        self.cap = cap
        self.deadline = math.inf

    def tick(self) -> None:
        """Raise RenderTimeout once the deadline has passed."""
        if time.monotonic() > self.deadline:
            raise RenderTimeout()

    def check_len(self, length: int, what: str) -> None:
        """Raise TooBig when `length` characters are over the cap."""
        if length > self.cap:
            raise TooBig(f"{what} would make {length:,} characters; the limit is "
                         f"{self.cap:,}")


def _none_as_empty(value: Any) -> Any:
    return "" if value is None else value


class Sandbox(ImmutableSandboxedEnvironment):
    """An immutable sandbox with a render budget (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, budget: Budget, *, autoescape: bool,
                 loader: BaseLoader | None = None) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=autoescape,
                         keep_trailing_newline=True, finalize=_none_as_empty, loader=loader,
                         cache_size=1000)
        self.budget = budget
        for name in ("lipsum", "cycler", "joiner", "namespace"):
            self.globals.pop(name, None)
        self.filters[GUARD_FILTER] = self._guarded
        for name, make in _FILTER_GUARDS.items():
            self.filters[name] = make(self.filters[name], budget)

    # --- loops ------------------------------------------------------------------------------

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, GUARD_FILTER, [], [], None, None,
                                     lineno=loop.lineno)
        return tree

    def _guarded(self, iterable: Iterable[Any]) -> Iterator[Any]:
        tick = self.budget.tick
        for n, item in enumerate(iterable):
            if not n & 255:
                tick()
            yield item

    # --- attribute access ----------------------------------------------------------------------

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`contact.attributes.plan`: a plain dict's data key is read directly (the common
        case, and always safe: it is data); everything else goes through the sandbox."""
        kind = type(obj)
        if kind is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        elif kind is LoopContext and not attribute.startswith("_"):
            return getattr(obj, attribute)  # loop.index, loop.first, ...: all public and safe
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """`entry['items']`: as `getattr`, a plain dict's key directly."""
        if type(obj) is dict:
            try:
                return obj[argument]
            except (KeyError, TypeError):
                pass
        return super().getitem(obj, argument)

    # --- calls and operators ------------------------------------------------------------------

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        """Call an object from the template, within the budget."""
        budget = __self.budget
        budget.tick()
        for value in (*args, *kwargs.values()):
            if isinstance(value, str):
                budget.check_len(len(value), "an argument")
        target = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(target, "__name__", ""), args, kwargs, budget)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """`*`, `**` and `%` with their results' sizes checked first."""
        self.budget.tick()
        if operator == "*":
            _check_repeat(left, right, self.budget)
            _check_repeat(right, left, self.budget)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return super().call_binop(context, operator, left, right)


# --- size checks ------------------------------------------------------------------------------

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_width(value: str, what: str) -> None:
    if value == "*":
        raise TooBig(f"{what}: a '*' width is not allowed in templates")
    if value and int(value) > MAX_FORMAT_WIDTH:
        raise TooBig(f"{what}: width {value} is over {MAX_FORMAT_WIDTH:,}")


@lru_cache(maxsize=1024)
def _check_percent_format(fmt: str) -> None:
    for spec in _PERCENT_SPEC.finditer(fmt):
        _check_width(spec.group(1) or "", "a % format")
        _check_width(spec.group(2) or "", "a % format")


def _check_brace_format(fmt: str) -> None:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # format() itself reports the malformed string
    for _literal, _field, spec, _conversion in parsed:
        if not spec:
            continue
        if "{" in spec:
            raise TooBig("a format: nested replacement fields are not allowed in templates")
        for digits in re.findall(r"\d+", spec):
            _check_width(digits, "a format")


def _check_repeat(seq: Any, times: Any, budget: Budget) -> None:
    if isinstance(seq, str | list | tuple) and isinstance(times, int):
        budget.check_len(len(seq) * max(times, 0), "repeating a value")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int | float) and isinstance(exponent, int | float):
        size = abs(float(base))
        if size > 1 and exponent > 0 and exponent * math.log2(size) > MAX_POWER_BITS:
            raise TooBig(f"{base} ** {exponent} is too large a number for a template")


def _int_arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> int:
    value = kwargs.get(name, args[index] if len(args) > index else 0)
    return value if isinstance(value, int) else 0


def _check_str_method(owner: str, method: str, args: tuple[Any, ...],
                      kwargs: dict[str, Any], budget: Budget) -> None:
    if method in ("ljust", "rjust", "center", "zfill"):
        budget.check_len(_int_arg(args, kwargs, 0, "width"), f"str.{method}")
    elif method == "expandtabs":
        tabs = owner.count("\t")
        budget.check_len(len(owner) + tabs * _int_arg(args, kwargs, 0, "tabsize"),
                         "str.expandtabs")
    elif method == "replace" and len(args) >= 2:
        budget.check_len(_replaced_length(owner, str(args[0]), str(args[1])), "str.replace")
    elif method == "join" and args:
        budget.check_len(_joined_length(args[0], owner), "str.join")
    elif method in ("format", "format_map"):
        _check_brace_format(owner)


def _replaced_length(text: str, old: str, new: str) -> int:
    count = len(text) + 1 if old == "" else text.count(old)
    return len(text) + count * (len(new) - len(old))


def _joined_length(items: Any, separator: str) -> int:
    if not isinstance(items, list | tuple | str):
        return 0  # an iterator: joined as it is, the output cap applies afterwards
    parts = sum(len(x) if isinstance(x, str) else 32 for x in items)
    return parts + len(separator) * max(len(items) - 1, 0)


Filter = Callable[..., Any]


def _guard_center(original: Filter, budget: Budget) -> Filter:
    @wraps(original)
    def center(value: Any, width: int = 80) -> Any:
        budget.check_len(width if isinstance(width, int) else 0, "center")
        return original(value, width)
    return center


def _guard_indent(original: Filter, budget: Budget) -> Filter:
    @wraps(original)
    def indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> Any:
        size = width if isinstance(width, int) else len(str(width))
        if size > MAX_INDENT:
            raise TooBig(f"indent: width {size} is over {MAX_INDENT}")
        text = str(s)
        budget.check_len(len(text) + (text.count("\n") + 1) * size, "indent")
        return original(s, width, first, blank)
    return indent


def _guard_format(original: Filter, budget: Budget) -> Filter:
    @wraps(original)
    def format_(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_percent_format(str(value))
        return original(value, *args, **kwargs)
    return format_


def _guard_join(original: Filter, budget: Budget) -> Filter:
    @wraps(original)
    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = value if attribute is not None else list(value)
        budget.check_len(_joined_length(items, str(d)), "join")
        return original(eval_ctx, items, d, attribute)
    return join


def _guard_replace(original: Filter, budget: Budget) -> Filter:
    @wraps(original)
    def replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
        budget.check_len(_replaced_length(str(s), str(old), str(new)), "replace")
        return original(eval_ctx, s, old, new, count)
    return replace


def _guard_tojson(original: Filter, budget: Budget) -> Filter:
    @wraps(original)
    def tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
        if isinstance(indent, int) and indent > MAX_JSON_INDENT:
            raise TooBig(f"tojson: indent {indent} is over {MAX_JSON_INDENT}")
        return original(eval_ctx, value, indent)
    return tojson


def _guard_batch(original: Filter, budget: Budget) -> Filter:
    @wraps(original)
    def batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        budget.check_len(linecount if isinstance(linecount, int) else 0, "batch")
        return original(value, linecount, fill_with)
    return batch


_FILTER_GUARDS: dict[str, Callable[[Filter, Budget], Filter]] = {
    "center": _guard_center, "indent": _guard_indent, "format": _guard_format,
    "join": _guard_join, "replace": _guard_replace, "tojson": _guard_tojson,
    "batch": _guard_batch, "slice": _guard_batch,
}
