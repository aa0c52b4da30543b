"""The README's commands are checkable: each states its time, the tour stays well under an hour, the checker
parses them as a shell would see them (scripts/check_readme.py runs them; CI calls it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_readme", REPO / "scripts" / "check_readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_readme"] = module
    spec.loader.exec_module(module)
    return module


def test_every_readme_command_states_its_time_and_the_tour_fits_in_under_an_hour(checker: ModuleType) -> None:
    sections = checker.sections((REPO / "README.md").read_text(encoding="utf-8"))
    for name in (*checker.DEFAULT_SECTIONS, "Longer runs"):
        commands = sections[name]
        assert commands, name
        for command in commands:
            assert command.limit_s is not None or command.text.split()[0] in (".", "export"), command.text
    tour = [c.limit_s for c in sections["Using it"] if c.limit_s is not None]
    assert sum(tour) <= 60 * 60  # the limits (upper bounds) of the whole tour add up to under an hour
    assert all(limit <= 10 * 60 for limit in tour)  # each a few minutes at most
    used = " ".join(c.text for c in sections["Using it"])
    assert "unlearnleak scenario" in used and "unlearnleak recover" in used and "unlearnleak infer-label" in used


def test_the_parser_joins_continuations_reads_limits_and_background_lines(checker: ModuleType) -> None:
    readme = "\n".join([
        "## Tour", "text", "```bash", ". .venv/bin/activate",
        "unlearnleak data list   # ≤ 30 s · what",
        "unlearnleak audit --a 1 \\", "    --b 2   # ≤ 2 min · joined",
        "python serve.py 8080 &     # ≤ 1 min · in the background",
        "unlearnleak infer-label runs/x   # ≤ 5 min · exit 0 or 3 · no verdict allowed",
        "```", "## Other", "```", "make test  # ≤ 1 h", "```"])
    found = checker.sections(readme)
    tour = found["Tour"]
    assert [(c.text, c.limit_s, c.background) for c in tour] == [
        (". .venv/bin/activate", None, False), ("unlearnleak data list", 30.0, False),
        ("unlearnleak audit --a 1 --b 2", 120.0, False), ("python serve.py 8080", 60.0, True),
        ("unlearnleak infer-label runs/x", 300.0, False)]
    assert [c.exits for c in tour] == [(0,), (0,), (0,), (0,), (0, 3)]
    assert found["Other"] == []  # a block not marked bash is prose, not a command


def test_the_checker_runs_a_command_and_fails_one_past_its_limit(checker: ModuleType, tmp_path: Path) -> None:
    commands = [checker.Command("t", "export GREETING=hello", None),
                checker.Command("t", 'echo "$GREETING from $(pwd)"', 30.0),
                checker.Command("t", "sleep 5", 0.5),
                checker.Command("t", "exit 3", 30.0),
                checker.Command("t", "exit 3", 30.0, exits=(0, 3))]
    (tmp_path / "logs").mkdir()
    results = checker.run_section("t", commands, tmp_path, {"PATH": "/usr/bin:/bin"}, [0], 1.0)
    outcomes = [outcome for _, outcome, _, _ in results]
    assert outcomes == ["ok", "over its time limit", "exit code 3", "ok"]
    assert f"hello from {tmp_path}" in results[0][3].read_text()
    assert results[1][2] < 4  # stopped at its limit, not after the whole sleep
