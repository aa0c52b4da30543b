"""Shared CLI plumbing: user errors become one clear line on stderr and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from unlearnleak.errors import UnlearnleakError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2


def fail(message: str) -> typer.Exit:
    """Print ``message`` to stderr and return the Exit(2) to raise."""
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(EXIT_USAGE)


def handle_errors(func: F) -> F:
    """Decorator for commands: UnlearnleakError / pydantic ValidationError → 'error: …' and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UnlearnleakError as exc:
            raise fail(str(exc)) from None
        except ValidationError as exc:
            raise fail(f"invalid configuration:\n{exc}") from None

    return wrapper  # type: ignore[return-value]
