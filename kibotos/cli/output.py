"""Terminal output of the CLI that stays true when piped.

``kibotos verify x | head`` closes the pipe early. Rich's console then exits with
status 1 and a bare ``print`` raises ``BrokenPipeError`` (a traceback at exit): either way
the command's own exit code (0 accepted, 1 rejected, 2 unreadable) was lost. Here a closed
stdout is swapped for ``/dev/null`` and the command carries on to its own exit code.

Tables never cut a value short (ids are copied from them): a table wider than the terminal
is printed as one ``key: value`` block per row instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (captured in tests): nothing to swap
        pass


class PipeConsole(Console):
    """A rich console whose closed pipe is silenced instead of ending the process."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _silence_stdout()


def make_console() -> PipeConsole:
    # wide tables when piped or captured (CI logs): rich would otherwise assume 80 columns
    return PipeConsole() if Console().is_terminal else PipeConsole(width=160)


def emit(text: str) -> None:
    """``print(text)`` to stdout; a reader that went away is not an error."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _cell(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def print_rows(console: Console, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` (same keys) as a table when every value fits on one line at the console's
    width, else as ``key: value`` blocks. No value is ever truncated."""
    if not rows:
        return
    keys = list(rows[0])
    widths = [max(len(k), *(len(_cell(r.get(k, ""))) for r in rows)) for k in keys]
    # rich's default box: one border column per side and between columns, one space of padding each side
    if sum(widths) + 3 * len(keys) + 1 <= console.width:
        table = Table(*keys)
        for col in table.columns:
            col.no_wrap = True
        for r in rows:
            table.add_row(*[_cell(r.get(k, "")) for k in keys])
        console.print(table)
        return
    for i, r in enumerate(rows):
        if i:
            console.print("")
        for k in keys:
            console.print(f"{k}: {_cell(r.get(k, ''))}", markup=False, highlight=False, soft_wrap=True)
