"""Null pairs of the audited model itself: the per-model calibration a server-side audit can build.

Why: classes drift after any update, and *how* they drift depends on the model. On a ResNet-18 (width 8) one
more SGD step lowers class 1's probes by −0.13 log-odds on average (the deleted class's drop after half of
class 1 is deleted exactly: −0.17), so a threshold measured on another model's null pairs "detected" class 1
in 38 of 40 such steps (docs/label_inference.md). A black-box user cannot see this drift coming; the holder
of θ can: it makes null pairs θ → θ' with updates that delete nothing (one SGD step on a batch of public rows;
one gradient-ascent step on a handful of public rows — the two kinds of benign update the benchmark's null
pairs are made of), replays the probes to each θ', and tests each class's change against the drift these
null pairs predict for it from the other classes' changes (``calibration.calibrate_on_own_nulls``). The
verdict then says which calibration it used (``calibration == "own_nulls"``).

Cost: ``pairs`` gradient steps on θ and ``pairs`` × probes forward passes, all on the holder's side; no query
to the served model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from unlearnleak.attacks.label_inference.calibration import Calibration, calibrate_on_own_nulls
from unlearnleak.attacks.label_inference.decision import confidence_changes
from unlearnleak.attacks.label_inference.probeset import ProbeSet
from unlearnleak.cache import cached_state, key_digest, tensors_digest
from unlearnleak.errors import ConfigError
from unlearnleak.oracle import ModelOracle
from unlearnleak.progress import track

if TYPE_CHECKING:
    from unlearnleak.attacks.label_inference.config import LabelInferenceConfig

OWN_NULL_PAIRS = 200  # the threshold is the 195th of 200 LOO statistics (5 % at 90 % confidence; ≥ 45 needed)
NULL_KINDS = ("step", "handful_ga")


def own_null_changes(model: nn.Module, probes: ProbeSet, x: torch.Tensor, y: torch.Tensor, *,
                     pairs: int = OWN_NULL_PAIRS, lr: float = 1e-3, batch_size: int = 128, handful: int = 5,
                     statistic: str = "log_odds", seed: int = 0, device: str = "cpu") -> list[torch.Tensor]:
    """Per null pair, the (K,) mean change of each class's probes (NaN without probes) from θ to θ'.

    Args:
        model: θ (not modified); its answers to the probes are the stored ``probes.original_proba``.
        x, y: public rows (not deleted from anything): the updates are made on them.
        pairs: null pairs, alternately one SGD step (lr, a random batch of ``batch_size`` rows) and one
            gradient-ascent step (lr) on ``handful`` rows of distinct random classes, both in eval mode (batch
            norm frozen, as the paper's fine-tune and unlearning).
    """
    keep = probes.on_target
    before, target = probes.original_proba[keep], probes.target[keep]
    out = []
    for after in own_null_answers(model, probes, x, y, pairs=pairs, lr=lr, batch_size=batch_size, handful=handful,
                                  seed=seed, device=device):
        _, means, _ = confidence_changes(before, after, target, statistic)
        full = torch.full((probes.num_classes,), float("nan"), dtype=torch.float64)
        full[: means.numel()] = means
        out.append(full)
    return out


def own_null_answers(model: nn.Module, probes: ProbeSet, x: torch.Tensor, y: torch.Tensor, *,
                     pairs: int = OWN_NULL_PAIRS, lr: float = 1e-3, batch_size: int = 128, handful: int = 5,
                     seed: int = 0, device: str = "cpu") -> list[torch.Tensor]:
    """Per null pair θ', its (m, K) probabilities on the on-target probes (:func:`own_null_changes`)."""
    if x.shape[0] < 2 or x.shape[0] != y.shape[0]:
        raise ConfigError(f"own null pairs need public rows with labels (got {x.shape[0]} rows, {y.shape[0]} "
                          f"labels); pass the public data the audit holds")
    g = torch.Generator().manual_seed(seed)
    inputs = probes.x[probes.on_target]
    classes = torch.unique(y)
    out = []
    for i in track(range(pairs), "own null pairs of θ (calibration)"):  # minutes on a CPU: say so
        kind = NULL_KINDS[i % len(NULL_KINDS)]
        if kind == "step":
            rows = torch.randperm(x.shape[0], generator=g)[:batch_size]
        else:
            chosen = classes[torch.randperm(classes.numel(), generator=g)[:handful]]
            rows = torch.stack([torch.nonzero(y == c).flatten()[
                int(torch.randint(int((y == c).sum()), (1,), generator=g))] for c in chosen])
        theta = _one_step(model, x[rows], y[rows], lr, ascent=kind == "handful_ga", device=device)
        out.append(ModelOracle(theta, num_classes=probes.num_classes, input_shape=probes.input_shape,
                               device=device).predict_proba(inputs))  # answered as θ's were
    return out


def _one_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, *, ascent: bool,
              device: str) -> nn.Module:
    """θ' = θ ∓ lr·∇ mean CE(x, y; θ): one full-batch SGD (or gradient-ascent) step in eval mode."""
    theta = copy.deepcopy(model).to(device).eval()
    params = [p for p in theta.parameters() if p.requires_grad]
    loss = F.cross_entropy(theta(x.to(device)), y.to(device))
    grads = torch.autograd.grad(-loss if ascent else loss, params, materialize_grads=True)  # unused: 0
    with torch.no_grad():
        for p, grad in zip(params, grads, strict=True):
            p.sub_(lr * grad)
    return theta


def needs_threshold(probes: ProbeSet, min_per_class: int, top_k: int = 1) -> bool:
    """Whether the decision will test anything: with a class short of probes (the decision's own rule,
    ``ProbeSet.verdict_minimum``) or fewer than ``top_k`` + 2 classes there is no verdict, so no null pairs need
    to be made."""
    return probes.num_classes - top_k >= 2 and not probes.lacking(probes.verdict_minimum(min_per_class))


NO_VERDICT_NOTE = "no own null pairs made: classes lack probes, so there is no verdict to calibrate"
FEW_CLASSES_NOTE = "no own null pairs made: the model has too few classes for the test, so there is no verdict"


def calibrate_if_tested(probes: ProbeSet, min_per_class: int, calibrate: Callable[[ProbeSet], Calibration],
                        top_k: int = 1) -> tuple[Calibration | None, dict[str, Any]]:
    """``calibrate(probes)`` and its cost, or — when the decision will give no verdict — nothing and a note."""
    if not needs_threshold(probes, min_per_class, top_k):
        return None, {"note": FEW_CLASSES_NOTE if probes.num_classes - top_k < 2 else NO_VERDICT_NOTE}
    calibration = calibrate(probes)
    return calibration, dict(calibration.cost)


def own_null_calibrator(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: LabelInferenceConfig, *,
                        cache: Path | None = None) -> Callable[[ProbeSet], Calibration]:
    """:func:`calibrate_on_own_model` of θ on the labelled public rows (x, y), with the attack's level, test,
    top_k, statistic, seed and device: what ``run``, ``infer-label`` and ``audit`` pass as the calibration."""
    def calibrate(probes: ProbeSet) -> Calibration:
        return calibrate_on_own_model(model, probes, x, y, level=config.level, test=config.test, top_k=config.top_k,
                                      statistic=config.statistic, seed=config.seed, device=config.device,
                                      cache=cache)

    return calibrate


def calibrate_on_own_model(model: nn.Module, probes: ProbeSet, x: torch.Tensor, y: torch.Tensor, *,
                           level: float = 0.05, test: str = "student", top_k: int = 1, pairs: int = OWN_NULL_PAIRS,
                           lr: float = 1e-3, statistic: str = "log_odds", seed: int = 0, device: str = "cpu",
                           cache: Path | None = None) -> Calibration:
    """The per-model calibration: :func:`own_null_changes` on θ, then ``calibrate_on_own_nulls``.

    ``cache``: a folder where the null pairs' class means are kept, keyed by the sha256 of θ, the probes, the
    public rows and the settings (cells of one sweep share θ and the probes: they are computed once).
    The returned calibration's ``cost`` says what it took: pairs, public rows, seconds, whether from the cache.
    """
    settings = {"pairs": pairs, "lr": lr, "statistic": statistic, "seed": seed, "batch_size": 128, "handful": 5}

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        started = time.perf_counter()
        nulls = own_null_changes(model, probes, x, y, pairs=pairs, lr=lr, statistic=statistic, seed=seed,
                                 device=device)
        return {"means": torch.stack(nulls)}, {"seconds": round(time.perf_counter() - started, 1)}

    def check(state: dict[str, torch.Tensor]) -> None:
        if tuple(state["means"].shape) != (pairs, probes.num_classes):
            raise ValueError(f"own null means of shape {tuple(state['means'].shape)}")

    started = time.perf_counter()
    if cache is None:
        state, info = compute()
        means, cached = state["means"], False
    else:
        key = {"kind": "own_null_pairs", **settings, "theta": tensors_digest(model.state_dict()),
               "probes": tensors_digest({"x": probes.x, "proba": probes.original_proba, "target": probes.target}),
               "rows": tensors_digest({"x": x, "y": y})}
        entry = cached_state(cache / f"own_nulls-{key_digest(key)}.safetensors", key, compute, check)
        means, cached, info = entry.state["means"], entry.cached, dict(entry.info)
    calibration = calibrate_on_own_nulls(
        list(means), level=level, test=test, top_k=top_k,
        source=f"{pairs} null pairs of this model made by the holder of θ (one SGD step or one gradient-ascent step "
               f"on public rows, lr {lr:g}; {probes.generator} probes, {statistic})")
    cost = {"pairs": pairs, "public_rows": int(x.shape[0]), "cached": cached,
            "seconds": round(time.perf_counter() - started, 1), "computed_seconds": info.get("seconds")}
    return replace(calibration, cost=cost)
