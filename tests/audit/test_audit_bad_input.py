"""Every bad input of `unlearnleak audit` gives one `error:` line naming the flag or file, exit 2, no folder."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from unlearnleak.cli import app
from unlearnleak.commands.audit import parse_floats, parse_ints
from unlearnleak.errors import ConfigError

runner = CliRunner()


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _run(args: list[str], out: Path) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1, result.output
    assert not out.exists()
    return result.output


def test_bad_checkpoints(user_pair: Any, white_box_args: Callable[..., list[str]], tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = white_box_args(user_pair, out, "--per-class", "0", "--iterations", "1")
    i = args.index(str(user_pair.unlearned))
    text = tmp_path / "notes.txt"
    text.write_text("hello, not weights")
    assert "is not a checkpoint" in _run([*args[:i], str(text), *args[i + 1:]], out)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"w": _Evil(str(marker))}, evil)
    assert "refused without running them" in _run([*args[:i], str(evil), *args[i + 1:]], out)
    evil.write_bytes(pickle.dumps({"w": _Evil(str(marker))}))
    assert "--unlearned" in _run([*args[:i], str(evil), *args[i + 1:]], out)
    assert not marker.exists()
    state = load_file(str(user_pair.unlearned))
    wrong = {**state, "fc.weight": torch.zeros(10, 7)}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    assert "net.fc.weight has shape (10, 7) in the checkpoint but (10, 4096) in the model" in _run(
        [*args[:i], str(tmp_path / "wrong.safetensors"), *args[i + 1:]], out)
    missing = {k: v for k, v in state.items() if k != "conv.bias"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    assert "lacks net.conv.bias" in _run([*args[:i], str(tmp_path / "missing.safetensors"), *args[i + 1:]], out)
    nan = {k: v.clone() for k, v in state.items()}
    nan["fc.bias"][0] = float("nan")
    save_file(nan, str(tmp_path / "nan.safetensors"))
    assert "θ_u (--unlearned" in _run([*args[:i], str(tmp_path / "nan.safetensors"), *args[i + 1:]], out)
    save_file(load_file(str(user_pair.unlearned)), str(tmp_path / "same.safetensors"))
    j = args.index(str(user_pair.original))
    same = [*args]
    same[j], same[i] = str(tmp_path / "same.safetensors"), str(tmp_path / "same.safetensors")
    assert "no difference — nothing to attack" in _run(same, out)


def test_bad_model_definitions(user_pair: Any, white_box_args: Callable[..., list[str]], tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = white_box_args(user_pair, out, "--per-class", "0")
    i = args.index(user_pair.model_def)
    raises = tmp_path / "raises.py"
    raises.write_text("raise RuntimeError('boom at import')\n")
    assert "raised RuntimeError on import: boom at import" in _run([*args[:i], f"{raises}:Net", *args[i + 1:]], out)
    ctor = tmp_path / "ctor.py"
    ctor.write_text("class Net:\n    def __init__(self, **kw):\n        raise ValueError('bad width')\n")
    assert "raised ValueError while being built" in _run([*args[:i], f"{ctor}:Net", *args[i + 1:]], out)
    assert "cannot import module" in _run([*args[:i], "no_such_pkg.models:Net", *args[i + 1:]], out)
    assert "does not exist" in _run([*args[:i], f"{tmp_path}/nope.py:Net", *args[i + 1:]], out)
    k = args.index("3,32,32")
    assert "the model rejects inputs of shape (3, 16, 16)" in _run([*args[:k], "3,16,16", *args[k + 1:]], out)


def test_inconsistent_options(user_pair: Any, white_box_args: Callable[..., list[str]], tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = white_box_args(user_pair, out)
    assert "not both" in _run([*args, "--original-endpoint", "http://127.0.0.1:9/v2/models/a"], out)
    assert "--labels must lie in [0, 10)" in _run([*args, "--labels", "12"], out)
    assert "--model-kwargs must be a JSON object" in _run([*args[:-2], "--model-kwargs", "[1]", *args[-2:]], out)
    file_out = tmp_path / "afile"
    file_out.write_text("x")
    result = runner.invoke(app, white_box_args(user_pair, file_out))
    assert result.exit_code == 2 and "existing file" in result.output


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=20))
def test_parsers_accept_only_well_formed_lists(text: str) -> None:
    try:
        values = parse_ints(text, "--input-shape", low=1)
    except ConfigError as exc:
        assert "--input-shape" in str(exc)
    else:
        assert values is not None and all(isinstance(v, int) and v >= 1 for v in values)
    try:
        floats = parse_floats(text, "--std", positive=True)
    except ConfigError as exc:
        assert "--std" in str(exc)
    else:
        assert floats is not None and all(v > 0 for v in floats)
