"""What every bad-input test checks of a CLI run: exit code 2 and exactly one `error:` line, no traceback.

Importable from any test module (tests/conftest.py puts this folder on sys.path).
"""

from __future__ import annotations

from typer.testing import Result


def one_error(result: Result, *needles: str) -> str:
    """The single `error:` line of a failed run (exit 2, no traceback), checked to contain ``needles``."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
