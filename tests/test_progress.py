"""Progress that works off a terminal: periodic one-line updates (what, done/total, elapsed, ETA), an estimate
before a long step, nothing at all when off, and one shared rich display for nested bars on a terminal."""

from __future__ import annotations

import re

import pytest

from unlearnleak import progress
from unlearnleak.progress import Task, about, duration, progress_mode, task, track


class Clock:
    """A fake time.monotonic that the test advances."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    return fake


class Stderr:
    """What was printed on stderr (pytest's capture: not a terminal)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Stderr:
    return Stderr(capsys)


def test_off_a_terminal_progress_is_plain_lines_by_default(monkeypatch: pytest.MonkeyPatch,
                                                           stderr: Stderr) -> None:
    monkeypatch.delenv("UNLEARNLEAK_PROGRESS", raising=False)
    assert progress_mode() == "lines"  # stderr is a StringIO: not a terminal
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS", "0")
    assert progress_mode() == "off"
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS", "bar")
    assert progress_mode() == "bar"


def test_lines_say_what_done_total_elapsed_and_eta_every_interval(monkeypatch: pytest.MonkeyPatch, clock: Clock,
                                                                 stderr: Stderr) -> None:
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS", "lines")
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS_INTERVAL", "30")
    with task("pretraining θ0", 100) as step:
        clock.now += 2  # setting up before the first unit: not part of the pace
        step.advance()
        for _ in range(9):
            clock.now += 5  # 5 s per unit from here on
            step.advance()
    lines = stderr.getvalue().splitlines()
    assert all(line.strip() for line in lines)  # never a blank line
    periodic = [line for line in lines if re.search(r"\d+/100 \(\d+%\)", line)]
    assert periodic == ["pretraining θ0: 7/100 (7%), elapsed 0:32, ETA 7:45"]  # 30 s after the start; 93 × 5 s
    assert lines[-1] == "pretraining θ0: 10/100 done in 0:47"
    # the projected total (about 8 min) exceeds a minute: it was said once, early
    estimates = [line for line in lines if "in all" in line]
    assert estimates == ["pretraining θ0: about 8 min in all (estimated from the first 2 of 100, 0:07 elapsed)"]
    assert lines.index(estimates[0]) == 0


def test_short_steps_stay_silent_and_off_means_nothing(monkeypatch: pytest.MonkeyPatch, clock: Clock,
                                                       stderr: Stderr) -> None:
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS", "lines")
    for _ in track(range(5), "gradient ascent"):
        clock.now += 0.1
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS", "0")
    with task("cells", 3, keep=True) as step:
        clock.now += 500
        step.advance(3)
    assert stderr.getvalue() == ""  # half a second: no estimate, no line; and off: nothing


def test_a_kept_step_says_how_it_ended(monkeypatch: pytest.MonkeyPatch, clock: Clock, stderr: Stderr) -> None:
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS", "lines")
    with task("cells", 4, keep=True) as step:
        step.describe("cells (1 failed)")
        clock.now += 3
        step.advance(4)
    assert stderr.getvalue().splitlines() == ["cells (1 failed): 4/4 done in 0:03"]


def test_on_a_terminal_nested_bars_share_one_live_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS", "bar")
    with task("cells", 2) as outer:
        live = progress._live.progress
        assert live is not None
        with task("inversion steps", 10) as inner:  # rich refuses a second live display: it must be shared
            inner.advance(4)
            assert progress._live.progress is live and len(live.tasks) == 2
            assert live.tasks[1].completed == 4
        assert len(live.tasks) == 1
        outer.advance()
    assert progress._live.progress is None


def test_durations_in_words_and_on_a_clock() -> None:
    assert duration(75) == "1:15" and duration(3725) == "1:02:05" and duration(-1) == "0:00"
    assert about(40) == "about 40 s" and about(240) == "about 4 min" and about(9000) == "about 2.5 h"


def test_a_task_is_a_context_manager_that_closes_once(monkeypatch: pytest.MonkeyPatch, clock: Clock,
                                                      stderr: Stderr) -> None:
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS", "lines")
    with Task("download (bytes)", None, keep=True) as step:
        clock.now += 61
        step.advance(10)
    step.close()
    assert stderr.getvalue().splitlines() == ["download (bytes): 10 done, elapsed 1:01",
                                              "download (bytes): 10 done in 1:01"]


def test_a_step_whose_units_are_slow_still_reports_each_interval(monkeypatch: pytest.MonkeyPatch,
                                                                  stderr: Stderr) -> None:
    import time

    monkeypatch.setenv("UNLEARNLEAK_PROGRESS", "lines")
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS_INTERVAL", "0.05")
    with task("nes probes", 100):
        time.sleep(0.5)  # no probe finishes: the log still says the step is alive
    lines = stderr.getvalue().splitlines()
    assert lines and lines[0].startswith("nes probes: 0/100 (0%), elapsed 0:00, ETA ?")
    assert lines[-1].startswith("nes probes: 0/100 done in")
