"""Tests that need the `integration` extra (MLServer, Ray, Playwright): skipped with the reason locally, failed
under CI, where `.ci/run` installs it (``from extras import require_integration``)."""

from __future__ import annotations

import importlib.util
import os

import pytest


def in_ci() -> bool:
    """True under CI (``CI`` set to anything but empty, 0, false, no): integration tests must run there."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_integration(module: str, why: str) -> None:
    """Skip a test that needs ``module`` from the `integration` extra when it is absent, saying how to install
    it; under CI, where `.ci/run` installs the extra, fail instead (a skip there would hide a broken setup)."""
    if importlib.util.find_spec(module) is not None:
        return
    message = (f"{module} is not installed ({why}): pip install -e '.[test,integration]' "
               "(or make test TEST_EXTRAS=test,integration)")
    if in_ci():
        pytest.fail(f"CI: {message}")
    pytest.skip(message)
