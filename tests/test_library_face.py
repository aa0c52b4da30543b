"""The library's face: the names `unlearnleak` exports resolve, and the README's Python example runs as written,
also when the ground-truth file holds images and no labels."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

import unlearnleak

REPO = Path(__file__).resolve().parents[1]


def test_every_exported_name_resolves_and_an_unknown_one_is_an_attribute_error() -> None:
    assert 15 <= len(unlearnleak.__all__) <= 25
    assert sorted(unlearnleak.__all__) == sorted(["__version__", *unlearnleak._EXPORTS])
    for name in unlearnleak.__all__:
        assert getattr(unlearnleak, name) is not None, name
    assert set(unlearnleak.__all__) <= set(dir(unlearnleak))
    with pytest.raises(AttributeError, match="no attribute 'recovr'"):
        _ = unlearnleak.recovr  # type: ignore[attr-defined]


def readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "the README has one Python example"
    return blocks[0]


def _audit_files(folder: Path, *, labels: bool) -> None:
    """Stand-ins for a user's files: a Net (examples/my_model.py) and θ_u one gradient-ascent step away."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from my_model import Net
    finally:
        sys.path.remove(str(REPO / "examples"))
    torch.manual_seed(0)
    net = Net()
    image = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()  # a smooth ramp
    label = torch.tensor([3])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss = F.cross_entropy(net(image), label)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    after = {name: (p + 0.01 * g).detach().contiguous()
             for (name, p), g in zip(net.named_parameters(), grads, strict=True)}
    folder.mkdir()
    torch.save(before, folder / "before.pt")
    save_file(after, str(folder / "after.safetensors"))
    save_file({"images": image, **({"labels": label} if labels else {})}, str(folder / "deleted.safetensors"))


@pytest.mark.parametrize("labels", [True, False], ids=["with-labels", "images-only"])
def test_the_readme_python_example_runs_as_written(tmp_path: Path, labels: bool) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    _audit_files(tmp_path / "audit-files", labels=labels)
    env = {**os.environ, "UNLEARNLEAK_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", readme_python()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    printed = ast.literal_eval(done.stdout.strip().splitlines()[-1])  # the scores, as Python prints a dict
    assert set(printed) >= {"psnr", "ssim"}
    assert json.dumps(printed["psnr"]) not in ("NaN", "Infinity") and printed["psnr"] > 0
