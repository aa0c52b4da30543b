"""The adaptive default: choose the TV weight per target by gradient cross-validation (issue 8, item 1).

No fixed prior strength serves every model: where ∇* is informative (an untrained network, no batch norm)
a strong TV prior erases the detail it carries; where it says little (a trained BN network) a weak prior
lets the optimisation fit noise. The attacker holds only the weights and ∇* (and θ0, N, k when known), so
the choice is made from ∇* alone:

1. **Race** (``race_share`` of the iterations or of the time budget): one restart per candidate TV weight,
   all from the same starting point, optimised as one batch on a random ``1 − race_holdout`` share of ∇*'s
   coordinates.
2. **Score** each candidate by the cosine cost on the *held-out* coordinates. A prior too weak for the target
   over-fits the noise (or the ambiguity) of the fitted coordinates, which the held-out ones do not share;
   a prior too strong cannot fit either half. Unlike the training cost, the held-out cost does not simply
   reward the weakest prior.
3. **Continue** the winner's iterate on all of ∇* with its weight for the rest of the run (with
   ``restarts`` = R > 1, the R best candidates' iterates, all at the winner's weight).

The choice (candidates, held-out and fitted costs, winner) is returned in ``InversionResult.race``.
Measurements that led to this design: benchmarks/tune_inversion.py and docs/feature_recovery.md.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from unlearnleak.attacks.feature_recovery.inversion import (
    GradientMatcher,
    InversionConfig,
    InversionResult,
    initial_inputs,
    run_inversion,
)
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient


def holdout_mask(n: int, share: float, seed: int) -> torch.Tensor:
    """(n,) float 0/1 mask, 1 on the coordinates the race FITS (about 1 − share of them); seeded."""
    generator = torch.Generator().manual_seed(seed + 7919)
    return (torch.rand(n, generator=generator) >= share).to(torch.float64)


def invert_adaptive(model: nn.Module, target: TargetGradient, labels: torch.Tensor, input_shape: tuple[int, ...],
                    config: InversionConfig, *, seed: int = 0, time_budget: float | None = None,
                    log_every: int = 100) -> InversionResult:
    """Race ``config.race`` TV weights, score them on held-out coordinates of ∇*, continue the winner."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    target = target.to(device)
    candidates = torch.tensor(config.race, dtype=torch.float64)
    m = candidates.numel()
    fit = holdout_mask(target.flat().numel(), config.race_holdout, seed)
    race_config = config.with_overrides(race=(), restarts=m, prune_at=(), keep_best=True,
                                        iterations=max(1, round(config.race_share * config.iterations)))
    start = initial_inputs(config.with_overrides(restarts=1), (int(labels.numel()), *input_shape),
                           torch.Generator().manual_seed(seed))  # one starting point for every candidate
    race = run_inversion(model, target, labels, input_shape, race_config, seed=seed,
                         time_budget=None if time_budget is None else config.race_share * time_budget,
                         log_every=0, init=start.expand(m, *start.shape[1:]),
                         prior_weights={"total_variation": candidates}, mask=fit)
    assert race.candidates is not None
    held_out = GradientMatcher(model, target, labels.to(device), race_config, mask=1 - fit, input_shape=input_shape)
    with held_out.hooks():
        heldout_costs = held_out.score(race.candidates, full=False).double().cpu()  # (m,)
    order = heldout_costs.argsort()[:config.restarts]  # restarts > 1: continue the best few, at the winner's weight
    winner = int(order[0])
    chosen = float(candidates[winner])
    race_seconds = time.perf_counter() - started
    main_config = config.with_overrides(race=(), total_variation=chosen,
                                        iterations=max(1, config.iterations - race.iterations))
    remaining = None if time_budget is None else max(time_budget - race_seconds, 1e-3)
    main = run_inversion(model, target, labels, input_shape, main_config, seed=seed, time_budget=remaining,
                         log_every=log_every, init=race.candidates[order], feature_phase=False)
    record = {
        "candidates": candidates.tolist(), "heldout_costs": heldout_costs.tolist(),
        "fit_costs": race.restart_costs.double().tolist(), "chosen_total_variation": chosen,
        "holdout_share": config.race_holdout, "iterations": race.iterations, "seconds": race_seconds,
    }
    timings = {**main.timings, "race_seconds": race_seconds, "race_iterations": float(race.iterations)}
    history = [(it + race.iterations, cost) for it, cost in main.history]
    return InversionResult(
        x=main.x, restart_costs=main.restart_costs, best_restart=main.best_restart,
        iterations=race.iterations + main.iterations, seconds=time.perf_counter() - started, timings=timings,
        history=history, race=record, candidates=main.candidates, alive=main.alive)
