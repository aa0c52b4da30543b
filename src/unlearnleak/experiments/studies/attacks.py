"""The studies' view of the attacks: thin calls of the pipeline's stages (experiments/pipeline.py).

``recover_and_score`` runs the server's feature recovery on a pair and scores it against D_u
(``recover_and_evaluate``); ``infer_and_score`` replays probes to θ_u's oracle and reports the guess against the
deleted class (``infer_and_evaluate``). Baselines (``image_baselines``) come from experiments/evaluation.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from unlearnleak.attacks.label_inference import ProbeSet
from unlearnleak.data import Dataset
from unlearnleak.experiments.evaluation import image_baselines as image_baselines
from unlearnleak.experiments.pipeline import generate_label_probes, infer_and_evaluate, recover_and_evaluate
from unlearnleak.experiments.schema import FeatureRecoverySpec, LabelInferenceSpec
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.metrics import LPIPS
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
    settings = FeatureRecoverySpec(preset=attack.preset, iterations=attack.iterations, restarts=attack.restarts,
                                   mode=mode)
    ev = recover_and_evaluate(pair, knowledge, settings, (forget_x, forget_y), seed=attack.seed,
                              device=attack.device, lpips=lpips, k=k)
    assert ev.scores is not None
    mean, rec = ev.scores["mean"], ev.reconstruction
    return {"psnr": mean["psnr"], "ssim": mean["ssim"], "lpips": mean.get("lpips"),
            "label_correct": ev.scores["label_accuracy"], "target_mode": rec.target_mode,
            "attack_seconds": rec.seconds, "iterations": rec.iterations, "reconstruction": rec.x}


def _label_spec(attack: AttackSettings) -> LabelInferenceSpec:
    """The studies' user attack: the settings' generator and probes per class, the default decision rule."""
    return LabelInferenceSpec(generator=attack.generator, per_class=attack.per_class, top_k=1)


def make_probes(model: nn.Module, spec: ModelSpec, public: Dataset, attack: AttackSettings) -> ProbeSet:
    """Probes made against θ before the deletion (black-box), reused for every θ_u of that θ."""
    # the oracle moves its model to channels-last; the white-box `gradient` generator gets θ untouched
    served = copy.deepcopy(model) if attack.generator == "gradient" else model
    oracle = ModelOracle(served, num_classes=spec.num_classes, input_shape=tuple(spec.input_shape),
                         device=attack.device)
    return generate_label_probes(_label_spec(attack), oracle, public=public, seed=attack.seed, device=attack.device,
                                 white_box=model)


def infer_and_score(original: nn.Module, unlearned: nn.Module, spec: ModelSpec, probes: ProbeSet,
                    deleted: int, attack: AttackSettings) -> dict[str, Any]:
    """Label inference from θ's stored answers and θ_u's oracle; right = the argmin names ``deleted``."""
    shape = tuple(spec.input_shape)
    before = ModelOracle(original, num_classes=spec.num_classes, input_shape=shape, device=attack.device)
    after = ModelOracle(unlearned, num_classes=spec.num_classes, input_shape=shape, device=attack.device)
    ev = infer_and_evaluate(before, after, _label_spec(attack), [deleted], seed=attack.seed, device=attack.device,
                            probes=probes)
    guess = ev.guess
    return {"deleted": deleted, "best": guess.best, "correct": ev.correct, "detected": guess.detected,
            "detected_correct": ev.detected_correct, "change_deleted": guess.changes[deleted],
            "queries_unlearned": guess.queries_unlearned}
