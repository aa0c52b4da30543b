"""The server's feature-recovery attack end to end: (ModelPair, ServerKnowledge) → ∇* → labels → inputs (§2).

:func:`recover` sees only what the honest-but-curious server holds: the pair (weights, architecture,
normalisation) and its declared :class:`~unlearnleak.knowledge.ServerKnowledge` (optionally θ0, N, k, …).
:func:`evaluate_reconstruction` is the separate evaluation step that receives the ground truth; the attack
never does.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from torch.nn import functional as F

from unlearnleak.attacks.feature_recovery.adaptive import Candidate, invert
from unlearnleak.attacks.feature_recovery.inversion import PRESETS, InversionConfig, second_order_attention
from unlearnleak.attacks.feature_recovery.labels import infer_labels
from unlearnleak.attacks.feature_recovery.learned_prior import LearnedPrior, learned_prior_off, prepare_learned_prior
from unlearnleak.attacks.feature_recovery.result import Reconstruction
from unlearnleak.attacks.feature_recovery.tabular import analytic_applicable, recover_row
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient, TargetMode, target_gradient
from unlearnleak.errors import ConfigError
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.metrics import LPIPS, feature_errors, image_metrics, match_by_mse
from unlearnleak.pair import ModelPair

Method = Literal["auto", "analytic", "inversion"]


def recover(pair: ModelPair, knowledge: ServerKnowledge | None = None, *, preset: str | InversionConfig = "best",
            labels: torch.Tensor | Sequence[int] | None = None, iterations: int | None = None,
            restarts: int | None = None, device: str | torch.device = "cpu", seed: int = 0,
            mode: TargetMode = "auto", k: int | None = None, method: Method = "auto",
            time_budget: float | None = None, learned_prior: LearnedPrior | None = None,
            **overrides: Any) -> Reconstruction:
    """Recover the unlearned samples from θ and θ_u (and θ0, N, k when the knowledge declares them).

    Args:
        pair: θ, θ_u and the architecture.
        knowledge: what the server also knows (θ0, N, k, kind of unlearning, labels); None: nothing.
            The result's ``config["knowledge_used"]`` names the parts that were used.
        preset: an inversion preset name or a config: ``"best"`` (the default: races the complete recipes
            ``paper``, ``modern`` and ``smooth`` on half of ∇* and keeps the one that explains the other half —
            when the budget gives each ≥ 100 steps, else runs ``modern`` alone; ``adaptive.py``), ``"paper"``
            (the official recipe), ``"modern"`` (breaching's modern recipe), ``"smooth"`` (strong TV and
            feature matching), ``"tabular"``. For tabular models ``"best"`` means ``"tabular"``. The adaptive
            choice is recorded in ``Reconstruction.config["race"]``.
        labels: the k labels if known (default ``knowledge.labels``); None infers them from ∇*.
        iterations, restarts: override the preset's.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seeds the restarts' starting points.
        mode: the ∇* estimator (``target_gradient``): ``auto``, ``approximate`` or ``exact``.
        k: number of unlearned samples; default ``knowledge.n_forget``, else ``len(labels)``, else 1.
        method: ``analytic`` (k = 1, first layer Linear with bias on the whole input), ``inversion``, or
            ``auto``: the closed form for such rows; for such images (MLPs) both, keeping the one whose
            gradient explains ∇* better (lower ``gradient_cost``).
        time_budget: seconds for the optimisation (the iteration count is fitted to it).
        learned_prior: the server's public images (``learned_prior.LearnedPrior``): decode the deleted
            samples' features read off ∇* with a decoder trained on them; the decoded image races beside the
            default's recipes as a start and a prior whose weight is raced (images, default preset only). None:
            off. The decoded images alone are
            returned in ``Reconstruction.decoded``; ``config["learned_prior"]`` records what was done (or why
            it was off).
        **overrides: further ``InversionConfig`` fields, e.g. ``bn_prior=0``.

    Raises:
        ConfigError: inconsistent k and labels, an unknown preset, or a method that does not apply.
    """
    started = time.perf_counter()
    knowledge = knowledge or ServerKnowledge()
    target = target_gradient(pair, knowledge, mode)
    model = pair.model(target.invert_on, device, knowledge)
    spec = pair.spec
    used = list(target.used)
    if labels is None and knowledge.labels is not None:
        labels, used = knowledge.labels, [*used, "labels"]
    given = None if labels is None else torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
    if not k and knowledge.n_forget is not None and "n_forget" not in used:
        used.append("n_forget")
    k = k or knowledge.n_forget or (given.numel() if given is not None else None) or 1
    if given is not None and given.numel() != k:
        raise ConfigError(f"{given.numel()} labels given for k = {k} unlearned samples")
    if given is not None and (given.min() < 0 or given.max() >= spec.num_classes):
        raise ConfigError(f"labels must lie in [0, {spec.num_classes}), got {given.tolist()}")
    label_scores = None
    if given is None:
        estimate = infer_labels(model, target, k, spec.num_classes)
        labels_used, source, label_scores = estimate.labels, "inferred", estimate.scores
    else:
        labels_used, source = given, "given"
    label_seconds = time.perf_counter() - started
    kind: Literal["image", "tabular"] = "image" if len(spec.input_shape) == 3 else "tabular"
    shape = tuple(spec.input_shape)
    closed_form = method in ("auto", "analytic") and analytic_applicable(model, target, k, shape)
    if method == "analytic" and not closed_form:
        raise ConfigError("analytic recovery needs k = 1 and a model whose first layer is Linear with a bias "
                          "on the whole (flattened) input")
    if closed_form and (kind == "tabular" or method == "analytic"):
        rec = _analytic(model, target, labels_used, source, label_scores, started, label_seconds, used, kind, shape)
        reason = "tabular rows (the learned prior decodes images)" if kind == "tabular" else "analytic method"
        return replace(rec, config={**rec.config, "learned_prior": learned_prior_off(
            None if learned_prior is None else f"not used: {reason}")})
    if isinstance(preset, InversionConfig):
        config, preset_name = preset, "custom"
    else:
        preset_name = "tabular" if kind == "tabular" and preset == "best" else preset
        config = PRESETS.get(preset_name)
    config = config.with_overrides(iterations=iterations, restarts=restarts, **overrides)
    decoded, prior_record = None, learned_prior_off()
    candidates: list[Candidate] = []
    if learned_prior is not None:
        candidates, decoded, prior_record = prepare_learned_prior(learned_prior, preset, pair, knowledge, target,
                                                                  model, labels_used, kind, seed=seed)
        if decoded is not None:
            preset_name = f"{preset_name}+learned_prior"
    try:
        with second_order_attention():
            result = invert(model, target, labels_used, shape, config, seed=seed, time_budget=time_budget,
                            candidates=candidates)
    except (RuntimeError, NotImplementedError) as exc:
        raise _no_second_derivative(exc, spec.name) or exc from None
    timings = {"label_seconds": label_seconds, **result.timings}
    if closed_form:  # an image MLP: the closed form competes with the inversion on the attacker's own score
        analytic = _analytic(model, target, labels_used, source, label_scores, started, label_seconds, used,
                             kind, shape)
        if float(analytic.restart_costs[0]) < gradient_cost(model, target, result.x, labels_used):
            return replace(analytic, timings={**timings, "analytic_won": 1.0}, decoded=decoded,
                           config={**analytic.config, "learned_prior": prior_record})
    return Reconstruction(
        x=result.x, labels=labels_used, label_source=source, kind=kind, method="inversion",  # type: ignore[arg-type]
        target_mode=target.mode, restart_costs=result.restart_costs, best_restart=result.best_restart,
        iterations=result.iterations, seconds=time.perf_counter() - started, preset=preset_name,
        config={**config.model_dump(mode="json"), "seed": seed, "target": target.describe(),
                "time_budget": time_budget, "device": str(device), "knowledge_used": used, "race": result.race,
                "learned_prior": prior_record},
        label_scores=label_scores, timings=timings, decoded=decoded,
    )


def _no_second_derivative(exc: BaseException, model_name: str) -> ConfigError | None:
    """The error to show when an operation of the model has no second derivative (None: another failure).

    Gradient matching differentiates the model's gradient, which PyTorch cannot do through some operations
    (``torch.cdist``'s backward, a fused kernel): that is the model's limit, said in one line, not a traceback."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    found = re.search(r"derivative for '?([\w.:]+)'? is not implemented|double backward", text)
    if found is None:
        return None
    op = found.group(1) or "double backward"
    hint = ", e.g. torch.cdist(a, b) as ((a[:, None] - b[None]) ** 2).sum(-1).clamp_min(1e-12).sqrt()" \
        if "cdist" in op else ""
    return ConfigError(f"feature recovery differentiates the model's gradient, and {model_name} uses an operation "
                       f"whose gradient PyTorch cannot differentiate ({op}); write that step with operations it "
                       f"can{hint}")


def _analytic(model: torch.nn.Module, target: TargetGradient, labels: torch.Tensor, source: str,
              label_scores: torch.Tensor | None, started: float, label_seconds: float,
              used: list[str], kind: Literal["image", "tabular"], shape: tuple[int, ...]) -> Reconstruction:
    x = recover_row(model, target, shape)  # (1, *shape)
    if kind == "image":
        x = x.clamp(0, 1)  # images live in [0, 1]
    cost = gradient_cost(model, target, x.float(), labels)
    return Reconstruction(
        x=x.float().cpu(), labels=labels, label_source=source, kind=kind,  # type: ignore[arg-type]
        method="analytic", target_mode=target.mode, restart_costs=torch.tensor([cost]), best_restart=0,
        iterations=0, seconds=time.perf_counter() - started, preset="analytic",
        config={"method": "analytic", "target": target.describe(), "knowledge_used": used}, label_scores=label_scores,
        timings={"label_seconds": label_seconds},
    )


def gradient_cost(model: torch.nn.Module, target: TargetGradient, x: torch.Tensor, labels: torch.Tensor) -> float:
    """``1 − cos(∇_θ ℓ(x, y), ∇*)`` — how well a candidate explains the target (0 = perfectly)."""
    device = next(model.parameters()).device
    params = [p for n, p in model.named_parameters() if n in target.names]
    loss = F.cross_entropy(model(x.to(device)), labels.to(device))
    grads = torch.autograd.grad(loss, params, materialize_grads=True)  # an unused parameter's gradient: 0
    g = torch.cat([t.reshape(-1) for t in grads]).double()
    t = target.flat().to(device)
    return float(1 - (g @ t) / (g.norm() * t.norm()).clamp_min(1e-300))


def costs_on_target(pair: ModelPair, knowledge: ServerKnowledge | None, rec: Reconstruction,
                    inputs: Sequence[tuple[torch.Tensor, torch.Tensor]], device: str = "cpu") -> list[float]:
    """``gradient_cost`` of each (x, labels) in ``inputs`` on the ∇* that ``rec`` was recovered from (float64; ∇*
    and the model built once).

    The deleted samples themselves beside the reconstruction tell an attack that stopped short (the truth explains
    ∇* far better: a stronger search could recover more) from a ∇* that cannot say more (both alike)."""
    with warnings.catch_warnings():  # the attack already reported the estimator's warnings
        warnings.simplefilter("ignore")
        target = target_gradient(pair, knowledge, rec.target_mode)
    model = pair.model(target.invert_on, device, knowledge)
    return [gradient_cost(model, target, x.float(), torch.as_tensor(y, dtype=torch.long)) for x, y in inputs]


def evaluate_reconstruction(rec: Reconstruction, ground_truth_x: torch.Tensor, ground_truth_y: torch.Tensor | None,
                            lpips: LPIPS | None = None, *, std: Sequence[float] | None = None,
                            transform: Any = None) -> dict[str, Any]:
    """Score a reconstruction against D_u: match samples by MSE (Hungarian), then per-sample metrics.

    Args:
        rec: the attack's result.
        ground_truth_x, ground_truth_y: D_u, (k, …) and (k,); without labels (None) the label scores are None.
        lpips: an LPIPS model (``unlearnleak.metrics.load_lpips()``) or None (LPIPS reported as None).
        std: per-channel normalisation std; adds the official code's ``psnr_std_scaled``.
        transform: a tabular transform with ``inverse``/``numeric_columns``/``categorical_columns``;
            adds per-feature errors in original units.

    Returns:
        ``{"samples": [per-sample dicts], "mean": {metric: mean}, "label_accuracy",
        "label_multiset_accuracy", "assignment", ...}``. ``assignment[i]`` is the reconstruction matched to
        ground-truth sample i.
    """
    gt_x = ground_truth_x.detach().cpu().float()
    gt_y = None if ground_truth_y is None else torch.as_tensor(ground_truth_y).detach().cpu().long().flatten()
    x = rec.x.detach().cpu().float()
    if x.shape != gt_x.shape:
        raise ConfigError(f"the reconstruction has shape {tuple(x.shape)} but the ground truth "
                          f"{tuple(gt_x.shape)}; was the attack run with the right k?")
    perm = match_by_mse(x, gt_x)
    matched = x[perm]
    labels = rec.labels.cpu()[perm]
    correct = None if gt_y is None else (labels == gt_y).tolist()
    samples: list[dict[str, Any]]
    if rec.kind == "image":
        samples = image_metrics(matched, gt_x, lpips=lpips, std=std)
    else:
        diff = (matched.double() - gt_x.double())
        samples = [{"mse": float(d.pow(2).mean()), "max_abs_error": float(d.abs().max())} for d in diff]
    for i, sample in enumerate(samples):
        sample.update({"index": i, "reconstruction": int(perm[i]), "label": int(labels[i]),
                       "true_label": None if gt_y is None else int(gt_y[i]),
                       "label_correct": None if correct is None else bool(correct[i])})
    out: dict[str, Any] = {
        "samples": samples,
        "mean": _means(samples),
        "label_accuracy": None if correct is None else sum(correct) / len(correct),
        "label_multiset_accuracy": None if gt_y is None else _multiset_accuracy(rec.labels.cpu(), gt_y),
        "label_source": rec.label_source,
        "assignment": perm.tolist(),
        "seconds": rec.seconds,
        "iterations": rec.iterations,
    }
    if rec.kind == "tabular" and transform is not None:
        rows_pred = transform.inverse(matched)
        rows_true = transform.inverse(gt_x)
        out["features"] = feature_errors(rows_pred, rows_true, numeric=transform.numeric_columns,
                                         categorical=transform.categorical_columns)
        out["rows"] = {"recovered": rows_pred, "true": rows_true}
    return out


def _means(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    keys = [k for k, v in samples[0].items() if isinstance(v, float | bool) or v is None]
    means: dict[str, float | None] = {}
    for key in keys:
        values = [s[key] for s in samples if s.get(key) is not None]
        means[key] = float(sum(float(v) for v in values) / len(values)) if values else None
    return means


def _multiset_accuracy(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Share of the true labels found in the inferred multiset (order-free)."""
    c = int(max(pred.max(), true.max())) + 1
    hit = torch.minimum(torch.bincount(pred, minlength=c), torch.bincount(true, minlength=c)).sum()
    return float(hit) / true.numel()
