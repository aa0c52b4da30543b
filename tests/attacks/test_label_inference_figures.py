"""Fig. 4 (confidence-change bars) and the probe grid are written as real PNG files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearnleak.attacks.label_inference import LabelGuess, ProbeSet
from unlearnleak.report.label_figures import plot_confidence_changes, plot_probe_grid

PNG = b"\x89PNG\r\n\x1a\n"


def guess(detected: bool = True) -> LabelGuess:
    changes = (0.001, -0.002, -0.3, float("nan"))
    return LabelGuess(ranked=(2, 1, 0, 3), changes=changes, probe_counts=(2, 2, 2, 0), top_k=1,
                      predicted=(2,) if detected else (), significant=(2,) if detected else (), detected=detected,
                      center=-0.0005, scale=0.001, z=3.0, queries_original=100, queries_unlearned=6, generator="nes")


@pytest.mark.parametrize("detected", [True, False])
def test_confidence_change_bars(tmp_path: Path, detected: bool) -> None:
    out = plot_confidence_changes(guess(detected), tmp_path / "fig4.png", class_names=["a", "b", "c", "d"],
                                  deleted=[2])
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 1000


def test_probe_grid(tmp_path: Path) -> None:
    x = torch.rand(6, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    proba = torch.full((6, 3), 0.1, dtype=torch.float64)
    proba[torch.arange(6), target] = 0.8
    probes = ProbeSet(x=x, target=target, original_proba=proba, queries=torch.ones(6, dtype=torch.long),
                      accepted=torch.tensor([True, True, False, True, True, True]), generator="zoo")
    out = plot_probe_grid(probes, tmp_path / "sub" / "probes.png")
    assert out.read_bytes()[:8] == PNG
    tab = ProbeSet(x=torch.rand(2, 5), target=torch.tensor([0, 1]), original_proba=proba[:2, :2],
                   queries=torch.ones(2, dtype=torch.long), accepted=torch.ones(2, dtype=torch.bool), generator="x")
    with pytest.raises(ValueError, match="image"):
        plot_probe_grid(tab, tmp_path / "t.png")
