"""SIGTERM (`kill`, `timeout`, a scheduler's time limit) cleans up like Ctrl-C in every command that stages an
output folder: no hidden ``.OUT.<pid>-<random>.partial`` folder is left, and the output is not written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

CLI = [sys.executable, "-c", "from unlearnleak.cli import main; main()"]


def _terminate_when(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 180) -> tuple[str, str]:
    try:
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert ready(), "the command never reached the point to interrupt"
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_during_a_study_removes_its_staged_folder(tmp_path: Path) -> None:
    out = tmp_path / "study"
    args = [*CLI, "study", "methods", "--out", str(out), "--set", "setting.dataset=digits", "--set",
            "setting.model=mlp", "--set", "setting.holdout=500", "--set", "setting.n_label=100", "--set",
            "attack.iterations=1000000", "--set", "methods={exact: {}}"]
    env = {**os.environ, "UNLEARNLEAK_PROGRESS": "0"}
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = _terminate_when(proc, lambda: any(p.name.endswith(".partial") for p in tmp_path.iterdir()))
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_sigterm_inside_any_staged_output_leaves_nothing(tmp_path: Path) -> None:
    """storage.output_folder is what scenario, recover, infer-label, audit, demo, study and report write through."""
    ready = tmp_path / "ready"
    script = ("import sys, time\nfrom pathlib import Path\nfrom unlearnleak.storage import output_folder\n"
              "with output_folder(sys.argv[1]) as staged:\n"
              "    (staged / 'half.txt').write_text('half')\n"
              "    Path(sys.argv[2]).write_text('ready')\n"
              "    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out"), str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _terminate_when(proc, ready.exists, timeout=60)
    assert proc.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready"]
