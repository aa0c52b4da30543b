"""The adaptive default: race complete recipes on part of ∇* and keep the one that explains the rest (issue 16).

No single recipe serves every model: where ∇* is informative (an untrained network, no batch norm) the paper's
signed AdamW with a weak TV prior recovers the photo almost exactly; on trained networks with normalisation
layers it returns colour noise while breaching's ``modern`` recipe (soft sign, patterned start, colour TV,
feature term) or a strong TV prior (``smooth``) recovers a recognisable image. The attacker holds only the
weights and ∇* (and θ0, N, k when known), so the choice is made from ∇* alone:

0. **Only if the budget affords it** (``race_min_steps``): below that, the whole budget goes to one trajectory
   of ``short_recipe``.
1. **Race** (``race_schedule``): every candidate runs its own recipe — optimiser, start, space, priors —
   fitted to a random ``1 − race_holdout`` share of ∇*'s coordinates (the output layer's, from which labels and
   features are read, always fitted), for a leg of L = ``race_share`` × T / n steps (n candidate restarts).

   - ``"truncated"`` (the default's): the leg is the first L steps of the recipe's OWN schedule for the
     winner's whole run, S = T − (n − 1)·L − n·C steps (not compressed, not decayed), each candidate from the
     start it would draw alone. To be scored it is cooled on a copy: C = ``race_cooldown`` × L more steps with
     the learning rate decayed from where the leg stopped to 0 (an undecayed iterate carries its step noise,
     which hides how well the recipe explains ∇*; the paper's signed steps most of all). ``race_average``
     scores the mean of the leg's last iterates instead, at no extra steps (measured worse on the tuning cases:
     docs/feature_recovery.md).
   - ``"compressed"`` (the rule before): the leg is a complete run of the recipe, its schedule compressed to L
     steps (decayed to 0), scored as it ends.
2. **Score** each candidate by the cosine cost on the *held-out* coordinates (gradient cross-validation).
   **Agreement gate** (``race_agreement`` dB; 0 = off): the first candidate is the data-faithful recipe (the
   weakest prior, ``paper``). If its scored image agrees with another candidate's to ≥ ``race_agreement`` dB
   PSNR, two recipes with different priors landed on the same image, so ∇* pins it down and the faithful recipe
   wins outright (the TV tie-break below would hand such a target to a smoother, blurrier recipe). Otherwise
   **pick**, among the candidates within ``(1 + race_tolerance)`` × the lowest held-out cost, the one whose
   image has the lowest total variation: several recipes may explain ∇* about equally well on a trained
   network, where a fast weak-prior recipe fits the gradient with colour noise; among near-equal explanations
   the smoother image is the likelier photo (``race_tolerance`` = 0: the lowest held-out cost alone).
3. **Continue** the winner on all of ∇* (with ``restarts`` = R > 1, the R best restarts of its recipe).
   Truncated: from its un-cooled leg, steps L … S of the same schedule with its optimiser state — so where a
   recipe wins, its run is its own recipe for S steps from its own start, the first L fitted on part of ∇*;
   the race costs it the losers' legs and the cool-downs, (n − 1)·L + n·C of T steps. Compressed: for the rest
   of the budget, a fresh schedule at ``race_continue_lr`` × its learning rate.
4. **Consensus** (``race_consensus`` = w; 0 = off): if the gate did not fire, the run returns (1 − w) × the
   winner's final image + w × the mean of the other candidates' scored images (each aligned to the winner's
   slots within a label), on the hypothesis that where the race's answers disagree a blend of them has a lower
   expected squared error than a bet on one (the consensus image of GradInversion's group consistency, Yin et
   al., CVPR 2021). No extra steps; the record keeps how far the blend moved from the winner. Off in
   ``best``: on the held-out half it was 0.28 dB below the winner alone, with a lower SSIM
   (docs/feature_recovery.md, "The consensus").

**Candidates.** ``config.race`` names them (``RaceEntry``: a preset, the prior whose weight varies, the
weights). Candidates that need data a preset cannot name — their own starting images, or an extra prior built
around a tensor (e.g. a decoded image and a prior pulling towards it) — are passed as one parameter::

    invert(model, target, labels, shape, preset("best"),
           candidates=[Candidate("decoder", preset("modern"), prior="decoded", weights=(1.0, 0.1, 10.0),
                                 init=decoded, priors=(DecodedImage(0.0, decoded),), alone=True)])

They race beside the configured recipes on the same held-out score, and win or lose like them; a config
without a race plus candidates races the config itself against them. Every candidate restart counts in the
budget split, so more candidates mean shorter legs; below ``race_min_steps`` the first candidate marked
``alone=True`` (else ``short_recipe``) runs alone for the whole budget.

The choice (candidates, held-out and fitted costs, winner) is returned in ``InversionResult.race``.
Measurements that led to this design: benchmarks/tune_race.py, tune_recipes.py and docs/feature_recovery.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unlearnleak.attacks.closed_forms import num_logits, output_layer
from unlearnleak.attacks.feature_recovery.inversion import (
    PRESETS,
    GradientMatcher,
    InversionConfig,
    InversionResult,
    learning_rate,
    run_inversion,
)
from unlearnleak.attacks.feature_recovery.priors import Prior, total_variation
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient
from unlearnleak.errors import ConfigError
from unlearnleak.metrics import match_by_mse, psnr

__all__ = ["Candidate", "Pick", "blend_consensus", "candidate_support", "candidates_of", "holdout_mask",
           "image_agreement", "invert", "invert_adaptive", "pairwise_agreement", "pick_winner"]

PROBE_STEPS = 3  # steps of the single trajectory that measure its step time (kept when no race follows)


@dataclass(frozen=True)
class Candidate:
    """One contestant of the race: a complete recipe, and the weights of one of its priors to try (one restart
    each; ``()``: the recipe's own weights, one restart). Optionally its own start ``init`` (k, *input_shape) in
    [0, 1] pixels, shared by its restarts, and ``priors`` built by the caller (added to the recipe's). With
    ``alone``, it (its first weight) is the single trajectory when the budget cannot afford the race."""

    name: str
    config: InversionConfig
    prior: str | None = None
    weights: tuple[float, ...] = ()
    init: torch.Tensor | None = None
    priors: tuple[Prior, ...] = ()
    alone: bool = False  # when the budget cannot afford the race: run this candidate alone (not short_recipe)

    def __post_init__(self) -> None:
        if self.config.race:
            raise ConfigError(f"race candidate {self.name!r} races itself; give it a plain recipe")
        if self.weights and self.prior is None:
            raise ConfigError(f"race candidate {self.name!r} lists weights but no prior to weigh")

    @property
    def restarts(self) -> int:
        """Restarts this candidate runs in the race (one per weight)."""
        return max(1, len(self.weights))

    def describe(self) -> list[dict[str, Any]]:
        """One record per restart: the recipe's name, the varied prior and its weight."""
        weights = self.weights or (None,)
        return [{"recipe": self.name, "prior": self.prior, "weight": w, "own_start": self.init is not None}
                for w in weights]


def candidates_of(config: InversionConfig) -> list[Candidate]:
    """The configured race as candidates (a config without a race is one candidate: itself)."""
    if not config.race:
        return [Candidate("configured", config.with_overrides(race=()))]
    return [Candidate(e.recipe, PRESETS.get(e.recipe), e.prior, e.weights) for e in config.race]


def invert(model: nn.Module, target: TargetGradient, labels: torch.Tensor, input_shape: tuple[int, ...],
           config: InversionConfig, *, seed: int = 0, time_budget: float | None = None, log_every: int = 100,
           candidates: Sequence[Candidate] = ()) -> InversionResult:
    """Run the inversion and return the best restart; with ``config.race`` or ``candidates`` the adaptive one.

    Args:
        model: the attacked model (θ or θ0, see ``target.invert_on``) in eval mode, on the target device.
        target: ∇* (moved to the model's device here).
        labels: (k,) labels the dummy samples are optimised with.
        input_shape: one input's shape, (C, H, W) or (D,).
        config: the inversion configuration (``preset(...)``).
        seed: seeds the restarts' starting points (and the race's coordinate split).
        time_budget: seconds; if set, the iteration count is fitted to it after a short calibration (the
            schedule follows the fitted count) and the run stops at the budget at the latest.
        log_every: record the best cost every this many iterations in ``history``.
        candidates: extra race candidates (images only), e.g. with their own start and prior.
    """
    if (config.race or candidates) and len(input_shape) == 3:
        return invert_adaptive(model, target, labels, input_shape, config, seed=seed, time_budget=time_budget,
                               log_every=log_every, candidates=candidates)
    return run_inversion(model, target, labels, input_shape, config, seed=seed, time_budget=time_budget,
                         log_every=log_every)


def holdout_mask(model: nn.Module, target: TargetGradient, share: float, seed: int) -> torch.Tensor:
    """(P,) float 0/1 mask, 1 on the coordinates the race FITS (about 1 − share of them); seeded.

    The output layer's coordinates are always fitted: the labels and the penultimate features are read off
    them, so a candidate that matches those features would match the held-out part of that layer for free."""
    generator = torch.Generator().manual_seed(seed + 7919)
    mask = (torch.rand(target.flat().numel(), generator=generator) >= share).to(torch.float64)
    try:
        name, _ = output_layer(model, num_logits(model))
    except ConfigError:
        return mask
    offset = 0
    for param, tensor in zip(target.names, target.tensors, strict=True):
        if param in (f"{name}.weight", f"{name}.bias"):
            mask[offset:offset + tensor.numel()] = 1.0
        offset += tensor.numel()
    return mask


def invert_adaptive(model: nn.Module, target: TargetGradient, labels: torch.Tensor, input_shape: tuple[int, ...],
                    config: InversionConfig, *, seed: int = 0, time_budget: float | None = None,
                    log_every: int = 100, candidates: Sequence[Candidate] = ()) -> InversionResult:
    """Race the candidates (``config.race`` and ``candidates``), score them on held-out coordinates of ∇*,
    continue the winner."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    target = target.to(device)
    contestants = candidates_of(config) + list(candidates)
    n = sum(c.restarts for c in contestants)
    k = int(labels.numel())
    per_candidate = config.race_share * config.iterations / n
    if config.race_min_steps:
        short = _short_budget(model, target, labels, input_shape, config, contestants, seed=seed,
                              time_budget=time_budget, started=started, n=n)
        if short is not None:
            return short
    fit = holdout_mask(model, target, config.race_holdout, seed)
    held_out = GradientMatcher(model, target, labels.to(device), InversionConfig(cost="cosine"), mask=1 - fit,
                               input_shape=input_shape)
    if config.race_schedule == "truncated":
        return _truncated_race(model, target, labels, input_shape, config, contestants, fit, held_out, seed=seed,
                               time_budget=time_budget, log_every=log_every, started=started)
    race_time = None if time_budget is None else config.race_share * time_budget
    records: list[dict[str, Any]] = []
    iterates: list[torch.Tensor] = []
    heldout: list[float] = []
    fitted: list[float] = []
    steps = 0
    for j, cand in enumerate(contestants):
        run_config = cand.config.with_overrides(
            restarts=cand.restarts, prune_at=(), keep_best=True, race=(),
            iterations=config.iterations if race_time is not None else max(1, round(per_candidate)))
        init = None if cand.init is None else cand.init.expand(cand.restarts, *cand.init.shape)
        weights = {cand.prior: torch.tensor(cand.weights, dtype=torch.float64)} \
            if cand.weights and cand.prior else None
        deadline = None if race_time is None else race_time * cand.restarts / n
        part = run_inversion(model, target, labels, input_shape, run_config, seed=seed + 101 * j,
                             time_budget=deadline, log_every=0, init=init, prior_weights=weights, mask=fit,
                             priors=cand.priors)
        assert part.candidates is not None
        with held_out.hooks():
            scores = held_out.score(part.candidates.to(device), full=False).double().cpu()
        steps += part.iterations * cand.restarts
        for r, record in enumerate(cand.describe()):
            records.append({**record, "iterations": part.iterations, "index": j})
            iterates.append(part.candidates[r])
            heldout.append(float(scores[r]))
            fitted.append(float(part.restart_costs[r]))
    pick = _pick(config, heldout, iterates, records)
    winner = pick.winner
    chosen = contestants[records[winner]["index"]]
    keep = _kept(records, heldout, winner, config.restarts)
    race_seconds = time.perf_counter() - started
    remaining_steps = max(1, config.iterations - steps)
    main_config = chosen.config.with_overrides(restarts=len(keep), race=(), iterations=remaining_steps,
                                               lr=chosen.config.lr * config.race_continue_lr)
    weights = {chosen.prior: torch.tensor([records[i]["weight"] for i in keep], dtype=torch.float64)} \
        if chosen.weights and chosen.prior else None
    remaining = None if time_budget is None else max(time_budget - race_seconds, 1e-3)
    main = run_inversion(model, target, labels, input_shape, main_config, seed=seed, time_budget=remaining,
                         log_every=log_every, init=torch.stack([iterates[i] for i in keep]), prior_weights=weights,
                         feature_phase=False, priors=chosen.priors)
    x, consensus = _consensus(config, pick, main.x, iterates, keep, labels)
    record = {
        "raced": True, "candidates": [{key: v for key, v in r.items() if key != "index"} for r in records],
        "heldout_costs": heldout, "fit_costs": fitted, "total_variation": pick.tvs, "eligible": pick.eligible,
        "tolerance": config.race_tolerance, "agreement_db": pick.agreement,
        "agreement_threshold": config.race_agreement, "agreements_db": pick.agreements, "pick_by": config.race_pick,
        "consensus": consensus, "winner": winner,
        "chosen_recipe": records[winner]["recipe"], "chosen_prior": records[winner]["prior"],
        "chosen_weight": records[winner]["weight"], "holdout_share": config.race_holdout, "iterations": steps,
        "steps_per_candidate": per_candidate if time_budget is None else None, "seconds": race_seconds,
        "samples": k,
    }
    timings = {**main.timings, "race_seconds": race_seconds, "race_iterations": float(steps)}
    return InversionResult(
        x=x, restart_costs=main.restart_costs, best_restart=main.best_restart,
        iterations=steps + main.iterations, seconds=time.perf_counter() - started, timings=timings,
        history=[(it + steps, cost) for it, cost in main.history], race=record, candidates=main.candidates,
        alive=main.alive)


@dataclass(frozen=True)
class Pick:
    """The race's decision: the winning restart, the restarts it was chosen among, the scored images' TVs, and
    the agreement (dB) of the data-faithful recipe's image with the others' (None when the gate is off)."""

    winner: int
    eligible: list[int]
    tvs: list[float]
    agreement: float | None
    pinned: bool = False  # the gate fired: ∇* pins the image down (no consensus)
    agreements: list[list[float]] | None = None  # PSNR (dB) between every two scored images (a diagnostic)


def _pick(config: InversionConfig, heldout: list[float], iterates: list[torch.Tensor],
          records: list[dict[str, Any]]) -> Pick:
    """``pick_winner`` on the scored iterates: their TVs and, with ``race_agreement``, how far the first
    candidate's images agree with the other candidates'."""
    tvs = [float(total_variation(x)) for x in iterates]
    faithful = [i for i, r in enumerate(records) if r["index"] == 0]
    matrix = pairwise_agreement(iterates)
    agreement = image_agreement(iterates, faithful, matrix) if config.race_agreement else None
    support = candidate_support(matrix, [r["index"] for r in records]) if config.race_pick == "agreement" else None
    winner, eligible = pick_winner(heldout, tvs, config.race_tolerance, faithful=faithful, agreement=agreement,
                                   threshold=config.race_agreement, support=support)
    return Pick(winner, eligible, tvs, agreement, _gate_fires(faithful, agreement, config.race_agreement), matrix)


def candidate_support(matrix: Sequence[Sequence[float]], groups: Sequence[int]) -> list[float]:
    """Per scored image, its mean agreement (PSNR, dB) with the images of the OTHER candidates (``groups``: the
    candidate of each restart; a candidate's own restarts share its start and prior, so they do not vouch for it).
    A restart with no other candidate gets 0."""
    out = []
    for i, row in enumerate(matrix):
        others = [row[j] for j in range(len(row)) if groups[j] != groups[i]]
        out.append(sum(others) / len(others) if others else 0.0)
    return out


def pairwise_agreement(iterates: Sequence[torch.Tensor]) -> list[list[float]]:
    """PSNR (dB, mean over the k images, capped at 100) between every two scored images: where recipes with
    different priors land on the same image, ∇* pinned it down (recorded for the audit trail and rule studies)."""
    shape = iterates[0].shape[-3:]
    images = [x.reshape(-1, *shape).clamp(0, 1) for x in iterates]
    return [[100.0 if i == j else float(psnr(a, b).clamp(max=100.0).mean()) for j, b in enumerate(images)]
            for i, a in enumerate(images)]


def blend_consensus(x: torch.Tensor, others: Sequence[torch.Tensor], labels: torch.Tensor,
                    weight: float) -> torch.Tensor:
    """(1 − weight) × ``x`` + weight × the mean of ``others`` (each (k, …) like ``x``), every other answer's
    samples first aligned to ``x``'s slots by minimum MSE among the slots of the same label (a joint
    reconstruction of k samples of one label may come back in any order)."""
    if not others or weight == 0:
        return x
    labels = labels.cpu()
    aligned = []
    for other in others:
        other = other.reshape(x.shape).to(x.device, x.dtype)
        rows = torch.arange(x.shape[0])
        for label in labels.unique():
            slots = (labels == label).nonzero().flatten()
            if len(slots) > 1:
                rows[slots] = slots[match_by_mse(other[slots.to(x.device)], x[slots.to(x.device)])]
        aligned.append(other[rows.to(x.device)])
    return (1 - weight) * x + weight * torch.stack(aligned).mean(0)


def _consensus(config: InversionConfig, pick: Pick, x: torch.Tensor, scored: list[torch.Tensor], keep: list[int],
               labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """The returned image and the consensus record (None when off): the blend of step 4, unless the gate
    fired or no other candidate scored an image."""
    if not config.race_consensus:
        return x, None
    members = [i for i in range(len(scored)) if i not in keep]
    if pick.pinned or not members:
        reason = "the agreement gate fired" if pick.pinned else "no other candidate"
        return x, {"weight": config.race_consensus, "applied": False, "reason": reason, "members": []}
    blended = blend_consensus(x, [scored[i] for i in members], labels, config.race_consensus)
    shape = x.shape[1:]
    moved = float(psnr(x.reshape(-1, *shape).clamp(0, 1), blended.reshape(-1, *shape).clamp(0, 1))
                  .clamp(max=100.0).mean()) if x.dim() == 4 else None
    return blended, {"weight": config.race_consensus, "applied": True, "members": members,
                     "psnr_to_winner": moved}


def image_agreement(iterates: Sequence[torch.Tensor], faithful: Sequence[int],
                    matrix: Sequence[Sequence[float]] | None = None) -> float | None:
    """The highest PSNR (dB, mean over the k images) between a ``faithful`` restart's image and another
    candidate's: two recipes with different priors that land on the same image were pinned there by ∇*.
    None when there is no other candidate. ``matrix``: their ``pairwise_agreement`` when already measured."""
    others = [i for i in range(len(iterates)) if i not in faithful]
    if not faithful or not others:
        return None
    matrix = pairwise_agreement(iterates) if matrix is None else matrix
    return max(matrix[f][o] for f in faithful for o in others)


def _gate_fires(faithful: Sequence[int], agreement: float | None, threshold: float) -> bool:
    """The agreement gate: on (threshold > 0), measured, and the faithful image agrees to the threshold."""
    return threshold > 0 and agreement is not None and bool(faithful) and agreement >= threshold


def pick_winner(heldout: Sequence[float], tvs: Sequence[float], tolerance: float, *, faithful: Sequence[int] = (),
                agreement: float | None = None, threshold: float = 0.0,
                support: Sequence[float] | None = None) -> tuple[int, list[int]]:
    """The race's pick and the restarts it chose among (also replayed on recorded races:
    benchmarks/race_replay.py).

    With a ``threshold`` (dB) and a measured ``agreement``: if the ``faithful`` restarts' image agrees with
    another candidate's to ≥ threshold, the faithful restart with the lowest held-out cost wins. Otherwise (and
    with the gate off), among the restarts within (1 + tolerance) × the lowest held-out cost: with ``support``
    (``candidate_support``, ``race_pick="agreement"``) the one that agrees most with the other candidates, else
    the lowest TV; ties go to the lower held-out cost."""
    if _gate_fires(faithful, agreement, threshold):
        return min(faithful, key=lambda i: heldout[i]), list(faithful)
    lowest = min(heldout)
    bound = lowest + tolerance * abs(lowest)  # the lowest is always eligible (also at a cost ≤ 0)
    eligible = [i for i in range(len(heldout)) if heldout[i] <= bound]
    if support is not None:
        return min(eligible, key=lambda i: (-support[i], heldout[i])), eligible
    return min(eligible, key=lambda i: (tvs[i], heldout[i])), eligible


def _truncated_race(model: nn.Module, target: TargetGradient, labels: torch.Tensor, input_shape: tuple[int, ...],
                    config: InversionConfig, contestants: list[Candidate], fit: torch.Tensor,
                    held_out: GradientMatcher, *, seed: int, time_budget: float | None, log_every: int,
                    started: float) -> InversionResult:
    """``race_schedule="truncated"``: every candidate restart runs the first L = ``race_share`` × T / n steps of
    its recipe's own schedule for S = T − (n − 1)·L − n·C steps (not decayed, not compressed) on the fitted
    coordinates, and is scored after a cool-down of C = ``race_cooldown`` × L steps on a copy; the winner then
    continues the SAME schedule from step L to S on all of ∇*, with its optimiser state — so the race costs the
    winner the losers' legs and the cool-downs, (n − 1)·L + n·C steps of T.

    With a time budget, T is fitted to it first from the step time of ``PROBE_STEPS`` steps (discarded; the
    legs run untimed), and the continuation stops at the budget at the latest."""
    device = next(model.parameters()).device
    n = sum(c.restarts for c in contestants)
    total = config.iterations
    if time_budget is not None:
        timing = run_inversion(model, target, labels, input_shape,
                               contestants[0].config.with_overrides(iterations=PROBE_STEPS, restarts=1, race=(),
                                                                    prune_at=(), keep_best=False),
                               seed=seed, log_every=0, feature_phase=False)
        per_step = timing.seconds / max(timing.iterations, 1)
        total = max(n + 1, min(config.iterations, int(time_budget / per_step)))
    leg = max(1, round(config.race_share * total / n))
    cool = round(config.race_cooldown * leg)
    tail = round(config.race_average * leg)
    horizon = max(leg + 1, total - (n - 1) * leg - n * cool)
    records: list[dict[str, Any]] = []
    iterates: list[torch.Tensor] = []
    states: list[tuple[int, dict[str, Any] | None]] = []
    probes: list[torch.Tensor] = []  # the scored iterates (cooled when race_cooldown > 0)
    heldout: list[float] = []
    fitted: list[float] = []
    steps = 0
    for j, cand in enumerate(contestants):
        run_config = cand.config.with_overrides(restarts=cand.restarts, prune_at=(), keep_best=False, race=(),
                                                iterations=horizon)
        init = None if cand.init is None else cand.init.expand(cand.restarts, *cand.init.shape)
        weights = {cand.prior: torch.tensor(cand.weights, dtype=torch.float64)} \
            if cand.weights and cand.prior else None
        part = run_inversion(model, target, labels, input_shape, run_config, seed=seed, log_every=0,
                             init=init, prior_weights=weights, mask=fit, priors=cand.priors, feature_phase=False,
                             stop_step=leg, average_last=tail)  # from the start it draws alone, as the winner
        assert part.candidates is not None
        probe = part.candidates if part.average is None else part.average
        if cool:  # score after a cool-down on a copy: the leg's learning rate decayed to 0 in `cool` steps
            cooled = run_inversion(model, target, labels, input_shape, run_config.with_overrides(
                iterations=cool, lr=learning_rate(run_config, part.iterations, horizon), schedule="cosine",
                warmup=0.0), seed=seed, log_every=0, init=probe, prior_weights=weights, mask=fit, priors=cand.priors,
                feature_phase=False, optimizer_state=part.optimizer_state)
            assert cooled.candidates is not None
            probe = cooled.candidates
            steps += cooled.iterations * cand.restarts
        with held_out.hooks():
            scores = held_out.score(probe.to(device), full=False).double().cpu()
        steps += part.iterations * cand.restarts
        for r, record in enumerate(cand.describe()):
            records.append({**record, "iterations": part.iterations, "index": j})
            iterates.append(part.candidates[r])
            probes.append(probe[r])
            states.append((r, part.optimizer_state))
            heldout.append(float(scores[r]))
            fitted.append(float(part.restart_costs[r]))
    pick = _pick(config, heldout, probes, records)
    winner = pick.winner
    chosen = contestants[records[winner]["index"]]
    keep = _kept(records, heldout, winner, config.restarts)
    race_seconds = time.perf_counter() - started
    state = states[winner][1]
    rows = torch.tensor([states[i][0] for i in keep])
    if state is not None:  # the kept restarts' rows of the per-element state (the scalar step count as it is)
        state = {key: v[rows.to(v.device)] if torch.is_tensor(v) and v.dim() > 0 else v for key, v in state.items()}
    main_config = chosen.config.with_overrides(restarts=len(keep), race=(), prune_at=(), iterations=horizon)
    weights = {chosen.prior: torch.tensor([records[i]["weight"] for i in keep], dtype=torch.float64)} \
        if chosen.weights and chosen.prior else None
    remaining = None if time_budget is None else max(time_budget - race_seconds, 1e-3)
    main = run_inversion(model, target, labels, input_shape, main_config, seed=seed, time_budget=remaining,
                         log_every=log_every, init=torch.stack([iterates[i] for i in keep]), prior_weights=weights,
                         feature_phase=False, priors=chosen.priors, start_step=leg, optimizer_state=state)
    x, consensus = _consensus(config, pick, main.x, probes, keep, labels)
    record = {
        "raced": True, "schedule": "truncated",
        "candidates": [{key: v for key, v in r.items() if key != "index"} for r in records],
        "heldout_costs": heldout, "fit_costs": fitted, "total_variation": pick.tvs, "eligible": pick.eligible,
        "tolerance": config.race_tolerance, "agreement_db": pick.agreement,
        "agreement_threshold": config.race_agreement, "agreements_db": pick.agreements, "pick_by": config.race_pick,
        "consensus": consensus, "winner": winner,
        "chosen_recipe": records[winner]["recipe"], "chosen_prior": records[winner]["prior"],
        "chosen_weight": records[winner]["weight"], "holdout_share": config.race_holdout, "iterations": steps,
        "steps_per_candidate": leg, "cooldown_steps": cool, "averaged_steps": tail, "schedule_length": horizon,
        "seconds": race_seconds,
        "samples": int(labels.numel()),
    }
    timings = {**main.timings, "race_seconds": race_seconds, "race_iterations": float(steps)}
    return InversionResult(
        x=x, restart_costs=main.restart_costs, best_restart=main.best_restart,
        iterations=steps + main.iterations, seconds=time.perf_counter() - started, timings=timings,
        history=[(it + steps, cost) for it, cost in main.history], race=record, candidates=main.candidates,
        alive=main.alive)


def _short_budget(model: nn.Module, target: TargetGradient, labels: torch.Tensor, input_shape: tuple[int, ...],
                  config: InversionConfig, contestants: list[Candidate], *, seed: int, time_budget: float | None,
                  started: float, n: int) -> InversionResult | None:
    """When the budget cannot give every candidate restart ``race_min_steps`` steps: no race, one trajectory for
    the whole budget — of the first candidate marked ``alone``, else of ``short_recipe`` (default: the first
    candidate's recipe). None when the race is affordable.

    Iterations: each candidate restart would run ``race_share`` × iterations / n steps. Time: the first
    ``PROBE_STEPS`` steps of the single trajectory measure its step time t; each would get ``race_share`` ×
    budget / (n·t) steps; those first steps are kept when no race follows.
    """
    chosen = next((c for c in contestants if c.alone), None)
    if chosen is None:
        chosen = Candidate(config.short_recipe, PRESETS.get(config.short_recipe)) if config.short_recipe \
            else contestants[0]
    plain = chosen.config.with_overrides(race=(), prune_at=(), restarts=config.restarts, iterations=config.iterations)
    weights = {chosen.prior: torch.full((config.restarts,), chosen.weights[0], dtype=torch.float64)} \
        if chosen.weights and chosen.prior else None
    own = None if chosen.init is None else chosen.init.expand(config.restarts, *chosen.init.shape)
    done, init = 0, own
    if time_budget is None:
        affordable = config.race_share * config.iterations / n
    else:
        probe = run_inversion(model, target, labels, input_shape,
                              plain.with_overrides(iterations=PROBE_STEPS, keep_best=False), seed=seed, log_every=0,
                              init=own, prior_weights=weights, priors=chosen.priors)
        assert probe.candidates is not None
        per_step = probe.seconds / max(probe.iterations, 1) / config.restarts
        affordable = config.race_share * time_budget / (n * per_step)
        init, done = probe.candidates, probe.iterations
    if affordable >= config.race_min_steps:
        return None
    remaining = None if time_budget is None else max(time_budget - (time.perf_counter() - started), 1e-3)
    main = run_inversion(model, target, labels, input_shape,
                         plain.with_overrides(iterations=max(1, config.iterations - done)), seed=seed,
                         time_budget=remaining, init=init, feature_phase=done == 0, prior_weights=weights,
                         priors=chosen.priors)
    record = {"raced": False, "chosen_recipe": chosen.name,
              "candidates": [r for c in contestants for r in c.describe()],
              "steps_per_candidate": affordable, "min_steps": config.race_min_steps,
              "reason": f"the budget affords ~{affordable:.0f} race steps per candidate (< {config.race_min_steps}):"
                        f" no race, {chosen.name} for the whole run"}
    return InversionResult(
        x=main.x, restart_costs=main.restart_costs, best_restart=main.best_restart,
        iterations=done + main.iterations, seconds=time.perf_counter() - started,
        timings={**main.timings, "race_seconds": 0.0, "race_iterations": 0.0},
        history=[(it + done, cost) for it, cost in main.history], race=record, candidates=main.candidates,
        alive=main.alive)


def _kept(records: list[dict[str, Any]], heldout: list[float], winner: int, restarts: int) -> list[int]:
    """The raced restarts that continue: the winner first, then its recipe's other restarts by held-out cost."""
    order = [winner, *sorted((i for i in range(len(records)) if i != winner), key=lambda i: heldout[i])]
    return [i for i in order if records[i]["index"] == records[winner]["index"]][:restarts]
