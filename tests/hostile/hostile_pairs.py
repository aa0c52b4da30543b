"""A tiny user pair for the hostile audit tests: a model file, θ and θ_u (different), written by plain PyTorch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, input_shape=(4,), num_classes=3):
        super().__init__()
        size = 1
        for s in input_shape:
            size *= s
        self.fc = nn.Linear(size, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))
'''


@dataclass(frozen=True)
class TinyPair:
    """The files of a user's pair and the command-line arguments that audit it."""

    folder: Path
    model_file: Path
    original: Path
    unlearned: Path
    input_shape: tuple[int, ...]

    def args(self, out: Path, *extra: str, model_def: str | None = None) -> list[str]:
        """`audit` over these files (white-box), fast settings."""
        shape = (["--input-shape", ",".join(map(str, self.input_shape))] if len(self.input_shape) == 3
                 else ["--features", str(self.input_shape[0])])
        return ["audit", "--model-def", model_def or f"{self.model_file}:Net", "--original", str(self.original),
                "--unlearned", str(self.unlearned), *shape, "--num-classes", "3", "--out", str(out), *extra]


def write_pair(folder: Path, input_shape: tuple[int, ...] = (4,), model_code: str = MODEL) -> TinyPair:
    """θ: a seeded random Linear layer; θ_u: θ with class 0's bias lowered (so the pair differs)."""
    folder.mkdir(parents=True, exist_ok=True)
    model_file = folder / "tiny_model.py"
    model_file.write_text(model_code)
    g = torch.Generator().manual_seed(0)
    size = math.prod(input_shape)
    original = {"fc.weight": torch.randn(3, size, generator=g), "fc.bias": torch.randn(3, generator=g)}
    unlearned = {k: v.clone() for k, v in original.items()}
    unlearned["fc.bias"][0] -= 0.5
    save_file(original, str(folder / "before.safetensors"))
    save_file(unlearned, str(folder / "after.safetensors"))
    return TinyPair(folder, model_file, folder / "before.safetensors", folder / "after.safetensors", input_shape)
