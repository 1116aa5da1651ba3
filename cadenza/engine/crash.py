"""Named crash points: stop the process dead at an exact place, for recovery tests.

With `CADENZA_CRASH_AT=dispatch.after_send` in its environment, a process that reaches
`crash_point("dispatch.after_send")` exits at once with status 137 (what a shell reports for
SIGKILL): no `finally`, no `atexit`, no flush, no commit, just as if the machine had killed
it. Unset, a crash point costs one comparison with None.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

CRASH_ENV = "CADENZA_CRASH_AT"
EXIT_CODE = 137

DISPATCH_POINTS = (
    "dispatch.after_claim",
    "dispatch.after_render",
    "dispatch.after_send",
    "dispatch.before_commit",
)
"""The dispatcher's points, in the order a batch passes them."""


class CrashPoints:
    """The armed crash point of one process (None: none)."""

    __slots__ = ("armed",)

    def __init__(self, armed: str | None = None) -> None:
        self.armed = armed or None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> CrashPoints:
        """Armed from `CADENZA_CRASH_AT` (read once, here)."""
        return cls((os.environ if environ is None else environ).get(CRASH_ENV))

    def __call__(self, name: str) -> None:
        """Exit with status 137 if `name` is the armed point."""
        if self.armed is not None and self.armed == name:
            os._exit(EXIT_CODE)


_process: CrashPoints | None = None


def crash_point(name: str) -> None:
    """The process-wide crash point `name`, armed from the environment on first use."""
    global _process
    if _process is None:
        _process = CrashPoints.from_environment()
    _process(name)
