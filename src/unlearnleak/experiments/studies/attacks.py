"""The ONE place the studies call the attacks (adapt these two functions when the attack APIs change).

``recover_and_score`` runs the server's feature recovery on a pair and scores it against D_u;
``infer_and_score`` replays probes to θ_u's oracle and reports the guess against the deleted class.
Baselines beside them: the mean-colour image and the 4×4 thumbnail of D_u (PSNR/SSIM/LPIPS), chance for labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from unlearnleak.attacks.feature_recovery import evaluate_reconstruction, recover
from unlearnleak.attacks.label_inference import DecisionConfig, ProbeSet, generate_probes, infer_label
from unlearnleak.data import Dataset
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.metrics import LPIPS, image_metrics
from unlearnleak.models import ModelSpec
from unlearnleak.oracle import ModelOracle
from unlearnleak.pair import ModelPair
from unlearnleak.unlearning import StateDict


@dataclass(frozen=True)
class AttackSettings:
    """Attack strength used by both studies (the `best` preset at a CPU-sized iteration count)."""

    preset: str = "best"
    iterations: int = 300
    restarts: int = 1
    generator: str = "public"
    per_class: int = 10
    seed: int = 0
    device: str = "cpu"


def recover_and_score(spec: ModelSpec, original: StateDict, unlearned: StateDict, forget_x: torch.Tensor,
                      forget_y: torch.Tensor, *, mode: Literal["approximate", "exact"], base: StateDict | None,
                      n_train: int, attack: AttackSettings, lpips: LPIPS | None) -> dict[str, Any]:
    """Feature recovery on (θ, θ_u) [+ θ0, N, k for ``exact``]; PSNR/SSIM/LPIPS and the label from ∇*."""
    k = int(forget_x.shape[0])
    pair = ModelPair(spec=spec, original=original, unlearned=unlearned)
    knowledge = (ServerKnowledge(base=base, n_train=n_train, n_forget=k, unlearning="exact") if mode == "exact"
                 else ServerKnowledge(n_forget=k, unlearning="approximate"))
    rec = recover(pair, knowledge, preset=attack.preset, iterations=attack.iterations, restarts=attack.restarts,
                  device=attack.device, seed=attack.seed, mode=mode, k=k)
    result = evaluate_reconstruction(rec, forget_x, forget_y, lpips)
    mean = result["mean"]
    return {"psnr": mean["psnr"], "ssim": mean["ssim"], "lpips": mean.get("lpips"),
            "label_correct": result["label_accuracy"], "target_mode": rec.target_mode,
            "attack_seconds": rec.seconds, "iterations": rec.iterations, "reconstruction": rec.x}


def make_probes(model: nn.Module, spec: ModelSpec, public: Dataset, attack: AttackSettings) -> ProbeSet:
    """Probes made against θ before the deletion (black-box), reused for every θ_u of that θ."""
    target: ModelOracle | nn.Module = model  # the white-box `gradient` generator reads θ itself
    if attack.generator != "gradient":
        target = ModelOracle(model, num_classes=spec.num_classes, input_shape=tuple(spec.input_shape),
                             device=attack.device)
    return generate_probes(attack.generator, target, spec.num_classes, attack.per_class, tuple(spec.input_shape),
                           attack.seed, public=public, device=attack.device)


def infer_and_score(original: nn.Module, unlearned: nn.Module, spec: ModelSpec, probes: ProbeSet,
                    deleted: int, attack: AttackSettings) -> dict[str, Any]:
    """Label inference from θ's stored answers and θ_u's oracle; right = the argmin names ``deleted``."""
    shape = tuple(spec.input_shape)
    before = ModelOracle(original, num_classes=spec.num_classes, input_shape=shape, device=attack.device)
    after = ModelOracle(unlearned, num_classes=spec.num_classes, input_shape=shape, device=attack.device)
    guess = infer_label(before, after, probes, config=DecisionConfig(top_k=1))
    return {"deleted": deleted, "best": guess.best, "correct": guess.best == deleted,
            "detected": guess.detected, "detected_correct": guess.detected and guess.label == deleted,
            "change_deleted": guess.changes[deleted], "queries_unlearned": guess.queries_unlearned}


def image_baselines(forget_x: torch.Tensor, mean: tuple[float, ...], lpips: LPIPS | None) -> dict[str, Any]:
    """What an attacker gets without the pair: the dataset's mean colour, and (an upper reference) the
    true image's 4×4 thumbnail upsampled back — mean PSNR/SSIM/LPIPS of each."""
    k, c, h, w = forget_x.shape
    flat = torch.tensor(mean, dtype=forget_x.dtype).reshape(1, -1, 1, 1).expand(k, c, h, w).contiguous()
    thumb = F.interpolate(F.adaptive_avg_pool2d(forget_x, 4), size=(h, w), mode="bilinear", align_corners=False)
    out = {}
    for name, images in (("mean_colour", flat), ("thumbnail_4x4", thumb.clamp(0, 1))):
        rows = image_metrics(images, forget_x, lpips=lpips)
        out[name] = {m: _mean([r[m] for r in rows]) for m in ("psnr", "ssim", "lpips")}
    return out


def _mean(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None
