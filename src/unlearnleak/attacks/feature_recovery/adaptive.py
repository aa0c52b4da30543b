"""The adaptive default: choose the TV weight per target by gradient cross-validation (issue 8, item 1).

No fixed prior strength serves every model: where ∇* is informative (an untrained network, no batch norm)
a strong TV prior erases the detail it carries; where it says little (a trained BN network) a weak prior
lets the optimisation fit noise. The attacker holds only the weights and ∇* (and θ0, N, k when known), so
the choice is made from ∇* alone:

0. **Only if the budget affords it** (``race_min_steps``): a race must give each candidate ~150 steps to
   tell the weights apart, and a shorter one leaves the winner a fraction of the budget; below that, the
   whole budget goes to one trajectory at the configured ``total_variation`` (from ``short_init``).
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
Measurements that led to this design: benchmarks/tune_inversion.py, benchmarks/tune_short.py and
docs/feature_recovery.md.
"""

from __future__ import annotations

import math
import time
from typing import Any

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

PROBE_STEPS = 3  # steps of the single trajectory that measure its step time (kept when no race follows)


def holdout_mask(n: int, share: float, seed: int) -> torch.Tensor:
    """(n,) float 0/1 mask, 1 on the coordinates the race FITS (about 1 − share of them); seeded."""
    generator = torch.Generator().manual_seed(seed + 7919)
    return (torch.rand(n, generator=generator) >= share).to(torch.float64)


def invert_adaptive(model: nn.Module, target: TargetGradient, labels: torch.Tensor, input_shape: tuple[int, ...],
                    config: InversionConfig, *, seed: int = 0, time_budget: float | None = None,
                    log_every: int = 100) -> InversionResult:
    """Race ``config.race`` TV weights, score them on held-out coordinates of ∇*, continue the winner.

    With ``race_rounds`` = r > 1 the race is successive halving: r rounds of equal steps per candidate, after
    each of which only the better half (by held-out cost, at least ``restarts``) goes on, each from its own
    iterate; the race as a whole takes ``race_share`` of the iterations or of the time budget.
    """
    started = time.perf_counter()
    device = next(model.parameters()).device
    target = target.to(device)
    candidates = torch.tensor(config.race, dtype=torch.float64)
    m = candidates.numel()
    fit = holdout_mask(target.flat().numel(), config.race_holdout, seed)
    rounds = _round_sizes(m, config.race_rounds, config.restarts)
    race_iterations = max(1, round(config.race_share * config.iterations))
    start = initial_inputs(config.with_overrides(restarts=1), (int(labels.numel()), *input_shape),
                           torch.Generator().manual_seed(seed))  # one starting point for every candidate
    if config.race_min_steps:
        short = _short_budget(model, target, labels, input_shape, config, seed=seed, time_budget=time_budget,
                              started=started)
        if short is not None:
            return short
    held_out = GradientMatcher(model, target, labels.to(device), config.with_overrides(race=()), mask=1 - fit,
                               input_shape=input_shape)
    steps = 0
    alive = torch.arange(m)
    x = start.expand(m, *start.shape[1:])
    history: list[dict[str, Any]] = []
    fit_costs = torch.full((m,), float("nan"), dtype=torch.float64)
    heldout_costs = torch.full((m,), float("nan"), dtype=torch.float64)
    race_steps = 0
    for j, size in enumerate(rounds):
        if j:  # successive halving: the better ``size`` of the survivors go on, from their iterates
            keep = heldout_costs[alive].argsort()[:size]
            alive, x = alive[keep], x[keep.to(x.device)]
        share = size / sum(rounds)  # of the race's time: equal steps per candidate in every round
        its = max(1, race_iterations // len(rounds) if j < len(rounds) - 1 else race_iterations - race_steps)
        race_config = config.with_overrides(race=(), restarts=int(alive.numel()), prune_at=(), keep_best=True,
                                            iterations=its)
        deadline = None if time_budget is None else config.race_share * time_budget * share
        part = run_inversion(model, target, labels, input_shape, race_config, seed=seed, time_budget=deadline,
                             log_every=0, init=x, prior_weights={"total_variation": candidates[alive]}, mask=fit)
        assert part.candidates is not None
        x = part.candidates
        steps += part.iterations
        race_steps += part.iterations
        with held_out.hooks():
            heldout_costs[alive] = held_out.score(x, full=False).double().cpu()
        fit_costs[alive] = part.restart_costs.double().cpu()
        history.append({"candidates": candidates[alive].tolist(), "iterations": part.iterations,
                        "heldout_costs": heldout_costs[alive].tolist()})
    order = heldout_costs[alive].argsort()[:config.restarts]  # restarts > 1: the best few, at the winner's weight
    winner = int(alive[order[0]])
    chosen = float(candidates[winner])
    race_seconds = time.perf_counter() - started
    main_config = config.with_overrides(race=(), total_variation=chosen,
                                        iterations=max(1, config.iterations - steps))
    remaining = None if time_budget is None else max(time_budget - race_seconds, 1e-3)
    main = run_inversion(model, target, labels, input_shape, main_config, seed=seed, time_budget=remaining,
                         log_every=log_every, init=x[order.to(x.device)], feature_phase=False)
    record = {
        "candidates": candidates.tolist(), "heldout_costs": heldout_costs.tolist(),
        "fit_costs": fit_costs.tolist(), "chosen_total_variation": chosen, "rounds": history,
        "holdout_share": config.race_holdout, "iterations": steps, "seconds": race_seconds, "raced": True,
    }
    timings = {**main.timings, "race_seconds": race_seconds, "race_iterations": float(steps)}
    main_history = [(it + steps, cost) for it, cost in main.history]
    return InversionResult(
        x=main.x, restart_costs=main.restart_costs, best_restart=main.best_restart,
        iterations=steps + main.iterations, seconds=time.perf_counter() - started, timings=timings,
        history=main_history, race=record, candidates=main.candidates, alive=main.alive)


def _round_sizes(m: int, rounds: int, keep: int) -> list[int]:
    """Candidates alive in each round of successive halving: m, ⌈m/2⌉, …, never below ``keep`` (or 2)."""
    sizes = [m]
    while len(sizes) < rounds and sizes[-1] > max(2, keep):
        sizes.append(max(math.ceil(sizes[-1] / 2), keep, 2))
    return sizes


def _short_budget(model: nn.Module, target: TargetGradient, labels: torch.Tensor, input_shape: tuple[int, ...],
                  config: InversionConfig, *, seed: int, time_budget: float | None,
                  started: float) -> InversionResult | None:
    """When the budget cannot give every candidate ``race_min_steps`` steps: no race, the configured
    ``total_variation`` for the whole budget (``restarts`` restarts from the seed's ``short_init`` starting
    points). None when the race is affordable.

    A race that short cannot tell the weights apart (at equal short horizons the strongest prior leads on every
    score, held-out included; docs/feature_recovery.md) and costs the winner most of its steps. Iterations:
    each candidate would run ``race_share`` × iterations steps. Time: the first ``PROBE_STEPS`` steps of the
    plain run measure its step time t (per restart); the race would give each of the m candidates
    race_share × budget / (m·t) steps (batched restarts cost less than m·t, so this errs towards no race);
    those first steps are kept when no race follows.
    """
    m, restarts = len(config.race), config.restarts
    plain = config.with_overrides(race=(), prune_at=(), init=config.short_init)
    init = initial_inputs(plain, (int(labels.numel()), *input_shape), torch.Generator().manual_seed(seed))
    done = 0
    if time_budget is None:
        affordable = config.race_share * config.iterations
    else:
        probe = run_inversion(model, target, labels, input_shape,
                              plain.with_overrides(iterations=PROBE_STEPS, keep_best=False), seed=seed,
                              log_every=0, init=init)
        assert probe.candidates is not None
        per_step = probe.seconds / max(probe.iterations, 1) / restarts
        affordable = config.race_share * time_budget / (m * per_step)
        init, done = probe.candidates, probe.iterations
    if affordable >= config.race_min_steps:
        return None
    remaining = None if time_budget is None else max(time_budget - (time.perf_counter() - started), 1e-3)
    main = run_inversion(model, target, labels, input_shape, plain.with_overrides(iterations=max(
        1, config.iterations - done)), seed=seed, time_budget=remaining, init=init, feature_phase=done == 0)
    record = {"raced": False, "candidates": list(config.race), "chosen_total_variation": config.total_variation,
              "init": plain.init,
              "steps_per_candidate": affordable, "min_steps": config.race_min_steps,
              "reason": f"the budget affords ~{affordable:.0f} race steps per candidate (< {config.race_min_steps}):"
                        f" no race, TV {config.total_variation:g} from a {plain.init} start for the whole run"}
    return InversionResult(
        x=main.x, restart_costs=main.restart_costs, best_restart=main.best_restart,
        iterations=done + main.iterations, seconds=time.perf_counter() - started,
        timings={**main.timings, "race_seconds": 0.0, "race_iterations": 0.0},
        history=[(it + done, cost) for it, cost in main.history], race=record, candidates=main.candidates,
        alive=main.alive)
