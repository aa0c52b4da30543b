"""Shared CLI plumbing: every user error becomes ONE line on stderr (``error: …``) and exit code 2.

Three sources of user errors are covered: our own :class:`~unlearnleak.errors.UnlearnleakError`, pydantic
validation errors, and typer's (click's) usage errors — a bad option value, a missing argument, an unknown
option — which typer would otherwise print as a multi-line panel.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from unlearnleak.errors import ConfigError, UnlearnleakError, one_line
from unlearnleak.experiments.config import validation_message

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2
EXIT_NO_VERDICT = 3  # label inference: classes lack probes or too few classes, so no verdict (docs/label_inference.md)

# click's exception base class, found through typer's public BadParameter so that it works whether typer
# vendors click (typer ≥ 0.2x) or depends on it.
_ClickException: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` (one line) to stderr and return the Exit(2) to raise."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    return typer.Exit(EXIT_USAGE)


def handle_errors(func: F) -> F:
    """Decorator for commands: user errors (ours, pydantic's, the OS's) → one 'error: …' line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UnlearnleakError as exc:
            raise fail(str(exc)) from None
        except ValidationError as exc:
            raise fail(validation_message(exc, exc.title)) from None
        except OSError as exc:  # disk full, permissions changed mid-run: environmental, not a bug
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{exc.strerror or exc}; check the path, its permissions and free space") from None

    return wrapper  # type: ignore[return-value]


class OneLineErrors(TyperGroup):
    """A typer group whose usage errors (bad option value, missing argument, …) print as one line, exit 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        """Run the command; in standalone mode, print click's errors as one line and exit with their code."""
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False,
                              windows_expand_args=windows_expand_args, **extra)
        except _ClickException as exc:
            if not standalone_mode:
                raise
            code = int(getattr(exc, "exit_code", 1))
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one has already printed the help
                print(f"error: {_usage_message(exc)}", file=sys.stderr)
            sys.exit(code)
        except typer.Abort:
            if not standalone_mode:
                raise
            print("aborted", file=sys.stderr)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)  # rv is the exit code of a typer.Exit, else None


def _usage_message(exc: Exception) -> str:
    """click's message for ``exc`` as one line, with the ``--help`` hint of the command it came from."""
    format_message = getattr(exc, "format_message", None)
    text = one_line(format_message() if callable(format_message) else str(exc)).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None)
    return f"{text}; see `{command} --help`" if command else text


# ----- option checks (typer callbacks): bad values are usage errors that name the flag ------------------------


def check_device_flag(device: str) -> str:
    """``--device`` must name a device torch can use here (checked before any work)."""
    from unlearnleak.devices import check_device

    try:
        return check_device(device)
    except ConfigError as exc:
        raise ConfigError(f"--device {device}: {exc}") from exc


# "\\[" keeps rich (typer's help renderer) from reading "[start:stop]" as a markup tag and dropping it
PUBLIC_DATA_HELP = ("Learned prior: the server's own images (not D_ft, not D_u): a dataset NAME\\[start:stop] read "
                    "from --data-dir, or a FOLDER of PNG/JPEG/BMP files of the input size "
                    "(docs/feature_recovery.md). Default: off.")
DATA_DIR_HELP = "Folder holding the dataset named by --public-data."
GRADIENT_SKETCH_HELP = ("Learned prior: the decoder also reads the deleted sample's gradient (k = 1), count-sketched "
                        "to this many entries per parameter tensor; 0: the penultimate features only (faster decoder "
                        "training, weaker). Needs --public-data. Default: 1024 (docs/feature_recovery.md).")


# ---- the options of the two attacks, mapped onto their one config each (attacks/*/config.py) ----------------

# config field → the flag that sets it, so that a value the config refuses is reported under the flag typed
RECOVERY_FLAGS = {"preset": "--preset", "iterations": "--iterations", "restarts": "--restarts", "mode": "--mode",
                  "time_budget": "--time-budget", "overrides": "--set", "learned_prior.public_data": "--public-data",
                  "learned_prior.decoder.gradient_sketch": "--gradient-sketch", "seed": "--seed",
                  "device": "--device", "k": "--k"}
LABEL_FLAGS = {"generator": "--generator", "per_class": "--per-class", "top_k": "--top-k",
               "statistic": "--statistic", "level": "--level", "calibration": "--calibration", "test": "--test",
               "min_per_class": "--min-per-class", "max_seconds": "--max-seconds", "params": "--set",
               "seed": "--seed", "device": "--device"}


def parse_sets(assignments: Sequence[str] | None) -> dict[str, Any] | None:
    """``--set key=value`` options as a mapping (values parsed as YAML); None when none were given."""
    from unlearnleak.experiments.config import apply_override

    if not assignments:
        return None
    data: dict[str, Any] = {}
    for assignment in assignments:
        apply_override(data, assignment)
    return data


def check_gradient_sketch(gradient_sketch: int | None, public_data: str | None) -> None:
    """Refuse ``--gradient-sketch`` without ``--public-data``: it sets the learned prior's decoder.

    Raises:
        ConfigError: the sketch given, the public data not.
    """
    from unlearnleak.errors import ConfigError

    if gradient_sketch is not None and public_data is None:
        raise ConfigError("--gradient-sketch sets the learned prior's decoder, which needs the server's own images: "
                          "give --public-data too, or drop --gradient-sketch")


def recovery_config(command: str, *, sets: Sequence[str] | None = None, public_data: str | None = None,
                    gradient_sketch: int | None = None, flags: dict[str, str] | None = None, **options: Any) -> Any:
    """The ``FeatureRecoveryConfig`` of ``command``'s options (field name → value, None: not given, the
    config's default), ``--set`` as inversion overrides, ``--public-data`` as the learned prior's source and
    ``--gradient-sketch`` as its decoder's gradient inputs; ``flags``: where ``command`` names a field's flag
    otherwise than ``RECOVERY_FLAGS``.

    Raises:
        ConfigError: ``--gradient-sketch`` without ``--public-data`` (it sets the learned prior's decoder).
    """
    from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
    from unlearnleak.experiments.config import load_config

    check_gradient_sketch(gradient_sketch, public_data)
    values = {**options, "overrides": parse_sets(sets), "learned_prior.public_data": public_data,
              "learned_prior.decoder.gradient_sketch": gradient_sketch}
    return load_config(FeatureRecoveryConfig, values=values, flags={**RECOVERY_FLAGS, **(flags or {})},
                       what=f"{command} options")


def label_config(command: str, *, sets: Sequence[str] | None = None, **options: Any) -> Any:
    """The ``LabelInferenceConfig`` of ``command``'s options (field name → value, None: not given, the
    config's default), ``--set`` as the probe generator's parameters."""
    from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
    from unlearnleak.experiments.config import load_config

    values = {**options, "params": parse_sets(sets)}
    return load_config(LabelInferenceConfig, values=values, flags=LABEL_FLAGS, what=f"{command} options")
