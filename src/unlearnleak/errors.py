"""User-facing errors: each says what is wrong and how to fix it; the CLI maps them to exit code 2."""

from __future__ import annotations


class UnlearnleakError(Exception):
    """Base class for errors caused by the user's input, files or environment (not by a bug)."""


class DataError(UnlearnleakError):
    """A dataset file is missing, truncated, corrupt or not in the expected official format."""


class DownloadError(UnlearnleakError):
    """A download failed (offline, HTTP error) or its checksum did not match the published one."""


class ConfigError(UnlearnleakError):
    """A configuration value or combination of values is invalid."""


class CheckpointError(UnlearnleakError):
    """A checkpoint or run folder cannot be read, or does not match the model it should fill."""


class QueryBudgetExceeded(UnlearnleakError):
    """A black-box oracle was asked for more queries than its budget allows."""


def one_line(text: str) -> str:
    """``text`` with its line breaks folded into '; ' (messages are one line)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())
