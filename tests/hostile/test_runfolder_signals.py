"""SIGTERM (`kill`, `timeout`, a scheduler's time limit) cleans up like Ctrl-C in every command that stages an
output folder: no hidden ``.OUT.<pid>-<random>.partial`` folder is left, and the output is not written.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


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


def test_sigterm_inside_any_staged_output_leaves_nothing(tmp_path: Path) -> None:
    """storage.output_folder is what scenario, recover, infer-label, audit, demo and report write through."""
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
