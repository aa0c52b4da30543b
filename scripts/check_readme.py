"""Run the README's commands as written, each within the time the README states beside it.

Every command line in a ```bash block of a checked section ends with its limit: ``# ≤ 5 min · what it does``
(``s``, ``min`` or ``h``). Lines without a limit are setup (``. .venv/bin/activate``, ``export …``): they run
before each command of their section. A command ending in ``&`` is started in the background once (it is ready
when it prints its first line, within its limit) and stopped when its section ends.

The commands run in a fresh workspace that mirrors the repository (symlinks to its top-level files, so
``.venv``, ``examples/``, ``configs/`` are where the README says) with ``data`` pointing at the data folder
(default: the shared subsets, ../shared/data), a fresh θ0 cache (nothing precomputed) and stdout/stderr going to a
log file per command, as in CI or under nohup. Usage::

    python scripts/check_readme.py                       # the sections "Using it" and "Audit your own unlearning"
    python scripts/check_readme.py --section "Longer runs" --list   # what would run, with the limits
    python scripts/check_readme.py --workspace /tmp/readme --keep    # keep the outputs to look at

A command whose comment says ``· exit 0 or 3 ·`` passes with either code (a status the README documents for it,
e.g. infer-label's "no verdict"); every other command must exit 0.

Exit code 0 when every command finished in time with an exit code it allows; 1 otherwise (the log of each
failure is named).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SECTIONS = ("Using it", "Audit your own unlearning")
UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
LIMIT = re.compile(r"#\s*≤\s*(\d+(?:\.\d+)?)\s*(s|min|h)\b")
# "· exit 0 or 3 ·" beside the limit: the exit codes the README documents for that command (default: 0 only)
EXITS = re.compile(r"·\s*exit\s+(\d+(?:\s*(?:,|or)\s*\d+)*)")
# Files the commands write into the workspace; never mirrored from the repository.
OUTPUTS = {"runs", "data", "audit", "audit-bb", "audit-files", "logs", ".git"}


@dataclass(frozen=True)
class Command:
    """One README command: its section, the shell text as written, its time limit, and whether it is setup."""

    section: str
    text: str
    limit_s: float | None  # None: a setup line
    background: bool = False
    exits: tuple[int, ...] = (0,)  # the exit codes that pass (a documented "no verdict" status, say)

    @property
    def shown(self) -> str:
        return " ".join(self.text.split())


def sections(readme: str) -> dict[str, list[Command]]:
    """Every ``## section`` of the README with the commands of its bash blocks, in order."""
    out: dict[str, list[Command]] = {}
    current, in_block, pending = "", False, ""
    for raw in readme.splitlines():
        if not in_block and raw.startswith("## "):
            current = raw[3:].strip()
            out.setdefault(current, [])
            continue
        if raw.strip().startswith("```"):
            in_block = raw.strip() == "```bash" if not in_block else False
            pending = ""
            continue
        if not in_block or not current:
            continue
        line = pending + raw.strip() if pending else raw.rstrip()
        code = line.split("#", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if code.endswith("\\"):  # continued on the next line (its limit is on the last one)
            pending = code[:-1].rstrip() + " "
            continue
        pending = ""
        if not code.strip():
            continue
        found = LIMIT.search(line[len(code):])
        limit = float(found.group(1)) * UNITS[found.group(2)] if found else None
        allowed = EXITS.search(line[len(code):])
        exits = tuple(int(c) for c in re.findall(r"\d+", allowed.group(1))) if allowed else (0,)
        background = code.rstrip().endswith("&")
        text = code.rstrip()[:-1].rstrip() if background else code.strip()
        out[current].append(Command(current, text, limit, background, exits))
    return out


def _workspace(path: Path | None, data: Path) -> Path:
    """A folder mirroring the repository's top level by symlinks, with ``data`` → the data folder."""
    root = Path(tempfile.mkdtemp(prefix="readme-check-")) if path is None else path
    root.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        link = root / entry.name
        if entry.name not in OUTPUTS and not link.exists() and not link.is_symlink():
            link.symlink_to(entry)
    data_link = root / "data"
    if not data_link.exists():
        data_link.symlink_to(data.resolve())
    (root / "logs").mkdir(exist_ok=True)
    return root


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("UNLEARNLEAK_PROGRESS", None)  # the default: plain progress lines, as in any log
    env.pop("VIRTUAL_ENV", None)
    env["UNLEARNLEAK_CACHE_DIR"] = str(cache)  # nothing precomputed: θ0 is pretrained as on a fresh machine
    return env


def _script(setup: list[Command], command: Command) -> str:
    return "\n".join(["set -e", *(c.text for c in setup), command.text])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_section(name: str, commands: list[Command], root: Path, env: dict[str, str], counter: list[int],
                scale: float) -> list[tuple[Command, str, float, Path]]:
    """Run one section's commands in order; returns (command, outcome, seconds, log) for each timed one."""
    results: list[tuple[Command, str, float, Path]] = []
    setup: list[Command] = []
    background: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            if command.limit_s is None:
                setup.append(command)
                continue
            counter[0] += 1
            log = root / "logs" / f"{counter[0]:02d}.log"
            limit = command.limit_s * scale
            print(f"[{time.strftime('%H:%M:%S')}] running (≤ {limit:.0f} s): {command.shown}", flush=True)
            started = time.monotonic()
            with log.open("wb") as handle:
                handle.write(f"$ {command.shown}\n".encode())
                handle.flush()
                process = subprocess.Popen(["bash", "-c", _script(setup, command)], cwd=root, env=env,
                                           stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
                if command.background:
                    background.append(process)
                    outcome = _wait_ready(process, log, limit)
                else:
                    try:
                        code = process.wait(limit)
                        outcome = "ok" if code in command.exits else f"exit code {code}"
                    except subprocess.TimeoutExpired:
                        outcome = "over its time limit"
                    finally:  # also when the check itself is stopped (Ctrl-C, SIGTERM)
                        _stop(process)
            seconds = time.monotonic() - started
            results.append((command, outcome, seconds, log))
            print(f"    {outcome}: {seconds:.1f} s (limit {limit:.0f} s), log {log}", flush=True)
    finally:
        for process in background:
            _stop(process)
    return results


def _wait_ready(process: subprocess.Popen[bytes], log: Path, limit: float) -> str:
    """A background command is ready when it has printed a line (after the ``$ command`` header)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if len(log.read_bytes().splitlines()) > 1:
            return "ok"
        if process.poll() is not None:
            return f"exit code {process.returncode} before it was ready"
        time.sleep(0.2)
    return "not ready within its time limit"


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the chosen sections, print a summary; 0 if all passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--section", action="append", help=f"a README section (default: {DEFAULT_SECTIONS})")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the data folder that ./data points to (default: ../shared/data)")
    parser.add_argument("--workspace", type=Path, help="where to run (default: a fresh temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the workspace (default: removed if all passed)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every limit (only for a machine known to be slower than 2 cores)")
    parser.add_argument("--list", action="store_true", help="list the commands and their limits, run nothing")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: still stop the background commands
    found = sections(args.readme.read_text(encoding="utf-8"))
    chosen = args.section or list(DEFAULT_SECTIONS)
    missing = [s for s in chosen if s not in found]
    if missing:
        print(f"error: no section {missing} in {args.readme}; it has: {', '.join(found)}", file=sys.stderr)
        return 2
    unlimited = [c for s in chosen for c in found[s] if c.limit_s is None and c.text.split()[0] not in (".", "export")]
    if unlimited:
        print("error: README commands without a stated time (`# ≤ N min` at the end of the line): "
              + "; ".join(c.shown for c in unlimited), file=sys.stderr)
        return 1
    if args.list:
        for s in chosen:
            total = sum(c.limit_s or 0 for c in found[s])
            print(f"## {s} (limits add up to {total / 60:.0f} min)")
            for c in found[s]:
                print(f"  {'setup' if c.limit_s is None else f'≤ {c.limit_s:.0f} s':>9}  {c.shown}")
        return 0
    if not args.data.is_dir():
        print(f"error: --data {args.data} is not a folder; give the folder with cifar-10-batches-py/ etc.",
              file=sys.stderr)
        return 2
    root = _workspace(args.workspace, args.data)
    cache = Path(tempfile.mkdtemp(prefix="readme-cache-"))
    env = _env(cache)
    counter = [0]
    results = []
    started = time.monotonic()
    print(f"workspace {root}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    for name in chosen:
        print(f"## {name}", flush=True)
        results += run_section(name, found[name], root, env, counter, args.scale)
    failed = [(c, o, log) for c, o, _, log in results if o != "ok"]
    print(f"\n{len(results) - len(failed)} of {len(results)} README commands passed in "
          f"{(time.monotonic() - started) / 60:.1f} min (load average now {os.getloadavg()[0]:.2f})")
    for command, outcome, log in failed:
        print(f"FAILED ({outcome}): {command.shown}\n    see {log}", file=sys.stderr)
    shutil.rmtree(cache, ignore_errors=True)
    if not failed and not args.keep and args.workspace is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Command", "main", "run_section", "sections"]
