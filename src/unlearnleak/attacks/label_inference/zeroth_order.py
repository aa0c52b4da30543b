"""Black-box probe generators that estimate gradients from queries: the paper's ``zoo`` and our ``nes``.

Both start every probe from the paper's clipped Gaussian noise and stop once the original model's
confidence in the target class reaches ``threshold`` (0.9995, docs/paper.md §4.2); both are charged every row they
send to the oracle.

``zoo`` (docs/paper.md §4.2, the official ``gen_probing_samples.py`` on ART's ZooAttack) — coordinate-wise Adam:
each iteration picks ``nb_parallel`` coordinates (importance-sampled), estimates each partial derivative of
the loss −log p_c with a symmetric difference (h = 1e-4; 2 queries per coordinate), takes one Adam step per
coordinate with per-coordinate bias correction (``torch.optim.Adam`` over the coordinates as 0-d parameters),
and evaluates the new iterate (1 query). An iteration costs
2·nb_parallel + 1 queries (2,049 at the paper's 1,024). A *round* (one ART ``generate`` call) runs up to 20
iterations, aborts early every 2 iterations without a 0.01 % improvement, and returns its lowest-loss iterate;
up to 10 rounds continue from that iterate with fresh Adam state, the learning rate dropping from 0.1 to 0.02
once p_c > 0.9; a start that is not accepted after 10 rounds is replaced by a new noise start. Each start
costs 1 query to evaluate. Queries per probe = starts + iterations · (2·nb_parallel + 1), exactly.

Where we differ from the official code (docs/paper.md §10.4), on purpose:
- The official noise accumulates onto the previous iterate (x_{t+1} = x_t + δ_cumulative) and is clipped
  to [0, 1], so it can only brighten pixels. Here an iterate is x_start + δ, with δ kept in the box
  [−x_start, 1 − x_start]: every coordinate moves both ways and x stays in [0, 1] without clipping.
- Acceptance is checked after every iteration (from the 1-query evaluation that is made anyway), not only
  at the end of a 20-iteration call; this can only lower zoo's query count.
- Importance sampling (|δ| max-pooled in blocks of H/8 per channel, + 0.01, normalised; uniform in the
  first iteration of a round) is applied at every image size; ART enables it only above 32 pixels.
- ``population`` probes can run side by side: every probe is the sequential algorithm (a coroutine that
  yields its query batches), and each step's batches of all of them go to the oracle in one request —
  the same probes and counts, in fewer and larger requests (default 1: one probe at a time).
- The official script redraws starts forever; here at most ``max_inits`` starts, after which the best
  probe is kept and flagged not accepted. A probe cut short by the run's time limit is kept the same way
  (flagged ``unfinished`` in the run's notes), so that a time-boxed run still reports what it reached.

``nes`` (ours) — the same search, made query-efficient:
1. a low-dimensional, coarse-to-fine search space: x = clip(base + upsample(z)) with z of shape
   (C, tile, tile), tile = 4, then 8, then 16 — the "data prior" of Ilyas et al. (ICLR 2019): neighbouring
   pixels move together. When the loss stops improving (``min_improvement`` within ``patience`` steps) the
   perturbation is baked into ``base`` and the search continues on the next finer tile;
2. antithetic Gaussian directions (NES: Wierstra et al.; Ilyas et al., ICML 2018): one estimate of the whole
   gradient of z from 2·directions queries, instead of one coordinate per 2 queries, averaged over successive
   steps with ``momentum`` (the "time prior" of Ilyas et al. 2019: the gradient changes slowly);
3. the log-odds log((1 − p_c)/p_c) as the loss — computed from probabilities, linear in the logits, and
   unlike −log p_c it keeps its slope as p_c → 1 where the threshold sits;
4. a 3-point line search per step along the normalised estimate (step lr·{0.3, 1, 3}, one query each; the
   best is taken and lr follows it), in place of a hand-tuned learning-rate schedule.
Many probes run side by side and share oracle requests (fewer, larger forward passes; the count of queries
is the same). A step costs 2·directions + len(step_scales) queries (23 by default); a start costs 1; so
queries per probe = starts + steps · (2·directions + len(step_scales)), exactly. Settings were chosen on
CIFAR-10 ConvNets (see docs/label_inference.md): finer tiles, more directions, larger σ or a restart gave
no fewer queries per accepted probe.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from unlearnleak.attacks.label_inference.probes import (
    GeneratorConfig,
    Job,
    Jobs,
    Made,
    ProbeGenerator,
    PublicData,
    RunLimits,
    log_odds,
    margin_loss,
    noise_init,
    register_generator,
)
from unlearnleak.attacks.label_inference.starts import ClassSchedule, ScheduleSettings, StartPool, StartSettings
from unlearnleak.errors import ConfigError
from unlearnleak.oracle import Oracle


def ce_loss(proba: torch.Tensor, target: int) -> torch.Tensor:
    """−log p_c per row: the official probe objective (float64)."""
    return -proba[:, target].double().clamp_min(1e-300).log()


# -------------------------------------------------------------------------------------------------- zoo
class CoordinateAdam:
    """ART's coordinate-wise Adam on a flat tensor with ``torch.optim.Adam``: each coordinate is its own
    parameter (a 0-d view of the tensor), so moments and step counts are per coordinate, and a step moves
    only the coordinates that were given a gradient (docs/paper.md §4.2; ART's ZooAttack). Equal to ART's update
    up to where ε enters (torch adds it to √v̂, ART to √v; ≈ 1e-7 relative)."""

    def __init__(self, flat: torch.Tensor, *, lr: float, betas: tuple[float, float], eps: float) -> None:
        self.coords = list(flat.unbind(0))  # views: the optimiser writes into ``flat``
        self.optimizer = torch.optim.Adam(self.coords, lr=lr, betas=betas, eps=eps, foreach=True)

    def step(self, idx: torch.Tensor, grad: torch.Tensor) -> None:
        """One Adam step on coordinates ``idx`` (n,) with their partial derivatives ``grad`` (n,)."""
        self.optimizer.zero_grad(set_to_none=True)
        for i, g in zip(idx.tolist(), grad.unbind(0), strict=True):
            self.coords[i].grad = g
        self.optimizer.step()


class ZooConfig(GeneratorConfig, StartSettings):
    """The paper's ZOO settings (docs/paper.md §4.2); ``start="noise"`` for the paper's starts (starts.py)."""

    threshold: float = Field(0.9995, gt=0, lt=1)  # accept when θ's p_c reaches this
    nb_parallel: int = Field(1024, ge=1)  # coordinates per iteration, 2 queries each
    h: float = Field(1e-4, gt=0)  # symmetric-difference step
    lr: float = Field(0.1, gt=0)
    lr_confident: float = Field(0.02, gt=0)  # learning rate once p_c > `confident`
    confident: float = Field(0.9, gt=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    max_iter: int = Field(20, ge=1)  # iterations per round (one ART `generate` call)
    max_rounds: int = Field(10, ge=1)  # rounds per start
    max_inits: int = Field(3, ge=1)  # noise starts per probe before it is kept unaccepted
    abort_early: bool = True
    abort_every: int = Field(2, ge=1)  # ART: max_iter // 10
    importance: bool = True
    block: int | None = Field(None, ge=1)  # importance block size; None: H // 8
    population: int = Field(1, ge=1)  # probes side by side, their queries sent in one request per step


@register_generator("zoo")
class ZooProbes(ProbeGenerator):
    """The paper's zeroth-order probes (see the module docstring for the algorithm and our fixes)."""

    Config = ZooConfig
    parallel = True

    def _check_params(self) -> None:
        cfg: ZooConfig = self.config  # type: ignore[assignment]
        if cfg.lr_confident > cfg.lr:
            raise ConfigError(f"zoo: lr_confident ({cfg.lr_confident}) should not exceed lr ({cfg.lr})")
        if cfg.confident >= cfg.threshold:
            raise ConfigError(f"zoo: confident ({cfg.confident}) must lie below threshold ({cfg.threshold})")

    def _make_many(self, oracle: Oracle, target: Oracle | nn.Module, jobs: Jobs, limits: RunLimits,
                   public: PublicData | None) -> Iterator[tuple[Job, Made]]:
        """Up to ``population`` probes side by side; each step's requests of all of them go in one oracle call.

        Each probe is the sequential algorithm written as a coroutine that yields its query batch and
        receives θ's answers, so a probe's search does not depend on which others share its requests.
        """
        cfg: ZooConfig = self.config  # type: ignore[assignment]
        numel = math.prod(oracle.input_shape)
        if cfg.nb_parallel > numel:
            raise ConfigError(f"zoo: nb_parallel={cfg.nb_parallel} exceeds the {numel} input coordinates")
        if cfg.start == "class":
            self._pool = StartPool.build(oracle, cfg.pool, jobs.seed, public)
        pending = iter(jobs)
        active: list[tuple[Job, Generator[torch.Tensor, torch.Tensor, Made], torch.Tensor]] = []
        exhausted = False
        while True:
            while not exhausted and len(active) < cfg.population:
                if limits.expired():  # no new probe once the time is up (checked before allocating it)
                    exhausted = True
                    break
                job = next(pending, None)
                if job is None:
                    exhausted = True
                    break
                probe = self._probe(job, oracle.input_shape, limits)
                active.append((job, probe, next(probe)))  # a probe's first request: its noise start
            if not active:
                return
            answers = oracle.predict_proba(torch.cat([request for _, _, request in active]))
            still = []
            start = 0
            for job, probe, request in active:
                rows = answers[start:start + request.shape[0]]
                start += request.shape[0]
                try:
                    still.append((job, probe, probe.send(rows)))
                except StopIteration as done:
                    yield job, done.value
            active = still

    def _probe(self, job: Job, shape: tuple[int, ...], limits: RunLimits
               ) -> Generator[torch.Tensor, torch.Tensor, Made]:
        """One probe: yields each query batch, receives θ's answers (n, K), returns the finished probe."""
        cfg: ZooConfig = self.config  # type: ignore[assignment]
        sent = 0
        best: tuple[float, torch.Tensor, torch.Tensor] | None = None
        steps = 0
        for init in range(1, cfg.max_inits + 1):
            if self._pool is not None:  # probe j's starts: the pool's ranks j·max_inits … for its class
                x = self._pool.start(job.target, job.index * cfg.max_inits + init - 1)[0]
            else:
                x = noise_init(shape, job.generator)
            proba = yield x
            sent += 1
            loss = float(ce_loss(proba, job.target)[0])
            lr = cfg.lr
            for _ in range(cfg.max_rounds):
                if float(proba[0, job.target]) >= cfg.threshold:
                    break
                x, loss, proba, its, stopped, queries = yield from self._round(shape, x, loss, proba, job, lr,
                                                                               limits)
                steps += its
                sent += queries
                if stopped:  # out of time: keep what this start reached, flagged unfinished
                    if best is None or loss < best[0]:
                        best = (loss, x, proba)
                    return Made(x=best[1], accepted=False, queries=sent, steps=steps, inits=init, proba=best[2],
                                unfinished=True)
                if float(proba[0, job.target]) > cfg.confident:
                    lr = cfg.lr_confident
            if float(proba[0, job.target]) >= cfg.threshold:
                return Made(x=x, accepted=True, queries=sent, steps=steps, inits=init, proba=proba)
            if best is None or loss < best[0]:
                best = (loss, x, proba)
        assert best is not None
        return Made(x=best[1], accepted=False, queries=sent, steps=steps, inits=cfg.max_inits, proba=best[2])

    def _round(self, shape: tuple[int, ...], x_start: torch.Tensor, loss_start: float, proba_start: torch.Tensor,
               job: Job, lr: float, limits: RunLimits
               ) -> Generator[torch.Tensor, torch.Tensor, tuple[torch.Tensor, float, torch.Tensor, int, bool, int]]:
        """One ART ``generate`` call from ``x_start``: (best x, its loss, its answer (1, K), iterations,
        whether the time limit cut it short, queries sent); yields its query batches, receives the answers."""
        cfg: ZooConfig = self.config  # type: ignore[assignment]
        flat_start = x_start.reshape(-1).double()  # (d,)
        d, n, c = flat_start.numel(), cfg.nb_parallel, job.target
        delta = torch.zeros(d, dtype=torch.float64)
        adam = CoordinateAdam(delta, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        lo, hi = -flat_start, 1.0 - flat_start
        prob: torch.Tensor | None = None
        best_loss, best_x, best_proba = loss_start, x_start, proba_start
        prev_loss = math.inf
        its = sent = 0
        rows = torch.arange(2 * n)
        for it in range(cfg.max_iter):
            if limits.expired():
                return best_x, best_loss, best_proba, its, True, sent
            if prob is None:
                idx = torch.randperm(d, generator=job.generator)[:n]
            else:
                idx = torch.multinomial(prob, n, replacement=False, generator=job.generator)
            batch = (flat_start + delta).repeat(2 * n, 1)  # (2n, d)
            batch[rows, idx.repeat_interleave(2)] += torch.tensor([cfg.h, -cfg.h], dtype=torch.float64).repeat(n)
            losses = ce_loss((yield batch.float().reshape(2 * n, *shape)), c)
            grad = (losses[0::2] - losses[1::2]) / (2 * cfg.h)  # (n,)
            adam.step(idx, grad)
            delta[idx] = torch.minimum(torch.maximum(delta[idx], lo[idx]), hi[idx])
            if cfg.importance and len(shape) == 3:
                prob = self._sampling_prob(delta, shape)
            x_new = (flat_start + delta).float().reshape(1, *shape)
            proba = yield x_new
            sent += 2 * n + 1
            loss, p = float(ce_loss(proba, c)[0]), float(proba[0, c])
            its = it + 1
            if loss < best_loss:
                best_loss, best_x, best_proba = loss, x_new, proba
            if p >= cfg.threshold:
                break
            if cfg.abort_early and it % cfg.abort_every == 0:
                if loss > 0.9999 * prev_loss:
                    break
                prev_loss = loss
        return best_x, best_loss, best_proba, its, False, sent

    def _sampling_prob(self, delta: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """|δ| max-pooled in blocks per channel, + 0.01, normalised (ART's importance sampling)."""
        cfg: ZooConfig = self.config  # type: ignore[assignment]
        ch, h, w = shape
        block = cfg.block or max(1, h // 8)
        mag = delta.abs().reshape(1, ch, h, w)
        pooled = F.max_pool2d(mag, block, stride=block, ceil_mode=True)
        up = pooled.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)[..., :h, :w]
        prob = up.reshape(-1) + 0.01
        return prob / prob.sum()


# -------------------------------------------------------------------------------------------------- nes
class NesConfig(GeneratorConfig, StartSettings, ScheduleSettings):
    """Our query-efficient black-box generator (see the module docstring); starts and per-class attempts:
    starts.py."""

    threshold: float = Field(0.9995, gt=0, lt=1)
    tiles: tuple[int, ...] = (4, 8, 16)  # coarse-to-fine: z has shape (C, tile, tile), upsampled to (H, W)
    directions: int = Field(10, ge=1)  # antithetic pairs per step: 2·directions queries
    sigma: float = Field(0.05, gt=0)  # exploration radius (pixel units, per z coordinate)
    lr: float = Field(0.1, gt=0)  # initial step length: RMS change of z per step (pixel units)
    step_scales: tuple[float, ...] = (0.3, 1.0, 3.0)  # line search: lr·scale candidates, 1 query each
    momentum: float = Field(0.7, ge=0, lt=1)  # average of successive unit estimates ("time prior")
    patience: int = Field(5, ge=1)  # steps without `min_improvement` before the next (finer) tile
    min_improvement: float = Field(0.1, ge=0)  # in log-odds units
    max_steps: int = Field(250, ge=1)  # per start
    max_inits: int = Field(1, ge=1)  # fresh starts; a hard probe gains more from a longer first start
    population: int = Field(100, ge=1)  # probes optimised side by side (shared oracle batches)


@register_generator("nes")
class NesProbes(ProbeGenerator):
    """Antithetic NES in a coarse-to-fine tiled space with a line search; many probes side by side."""

    Config = NesConfig
    parallel = True
    image_only = True

    def _check_params(self) -> None:
        cfg: NesConfig = self.config  # type: ignore[assignment]
        if not cfg.tiles or any(t < 1 for t in cfg.tiles) or list(cfg.tiles) != sorted(cfg.tiles):
            raise ConfigError(f"nes: tiles must be increasing positive sizes, got {cfg.tiles}")
        if not cfg.step_scales or any(a <= 0 for a in cfg.step_scales):
            raise ConfigError(f"nes: step_scales must be positive, got {cfg.step_scales}")
        if cfg.sigma > 1:
            raise ConfigError(f"nes: sigma={cfg.sigma} is larger than the whole pixel range")

    def queries_per_step(self) -> int:
        """2·directions antithetic evaluations + one per line-search candidate."""
        cfg: NesConfig = self.config  # type: ignore[assignment]
        return 2 * cfg.directions + len(cfg.step_scales)

    def _make_many(self, oracle: Oracle, target: Oracle | nn.Module, jobs: Jobs, limits: RunLimits,
                   public: PublicData | None) -> Iterator[tuple[Job, Made]]:
        cfg: NesConfig = self.config  # type: ignore[assignment]
        if len(oracle.input_shape) != 3:
            raise ConfigError(f"nes probes need image inputs (C, H, W), got {oracle.input_shape}")
        side = min(oracle.input_shape[1:])
        tiles = tuple(t for t in cfg.tiles if t <= side) or (side,)  # small images: drop the finer tiles
        cfg = cfg.model_copy(update={"tiles": tiles})
        pool = self._pool = StartPool.build(oracle, cfg.pool, jobs.seed, public) if cfg.start == "class" else None
        schedule = self._schedule = ClassSchedule(jobs.classes, jobs.per_class, cfg.max_attempts, cfg.class_budget,
                                                  cfg.running_per_class)
        found: dict[int, list[torch.Tensor]] = {c: [] for c in jobs.classes}  # accepted probes (1, C, H, W)
        active: list[_NesState] = []  # a probe's state is allocated only when it joins the population
        while True:
            if limits.expired():  # no new probe; the running ones are kept as they are, flagged unfinished
                for s in active:
                    if s.best is not None:
                        yield s.job, s.made(unfinished=True)
                return
            live = _live_queries(active)
            while len(active) < cfg.population:
                c = schedule.next_class(live)
                if c is None:
                    break
                job = jobs.job(c, schedule.attempts[c] - 1)
                near = None
                if found[c] and cfg.reuse_sigma > 0:  # start beside a probe of the class already found
                    base = found[c][job.index % len(found[c])]
                    near = (base + cfg.reuse_sigma * torch.randn(base.shape, generator=job.generator)).clamp(0, 1)
                share = None if cfg.class_budget is None else cfg.class_budget // jobs.per_class
                active.append(_NesState(job, oracle.input_shape, cfg, pool, near, share))
            if not active:
                return
            self._step(oracle, active, cfg)
            live = _live_queries(active)
            still: list[_NesState] = []
            for s in active:
                if not s.finished and schedule.over_budget(s.job.target, live.get(s.job.target, 0)):
                    s.finished = True  # the class spent its budget: keep the best iterate reached
                if s.finished:
                    made = s.made()
                    schedule.finished(s.job.target, made.accepted, made.queries)
                    if made.proba is not None and int(made.proba.argmax()) == s.job.target:
                        found[s.job.target].append(made.x)  # on target: later attempts start beside it
                    yield s.job, made
                else:
                    still.append(s)
            active = still

    def _step(self, oracle: Oracle, states: list[_NesState], cfg: NesConfig) -> None:
        """One step for every active probe; each phase's queries of all probes go in one oracle call."""
        fresh = [s for s in states if s.loss is None]
        if fresh:  # evaluate new starts (1 query each)
            proba = oracle.predict_proba(torch.cat([s.image(s.z) for s in fresh]))
            for s, row in zip(fresh, proba, strict=True):
                s.queries += 1
                s.take(s.z, row[None])
        ready = [s for s in states if not s.finished and s.loss is not None]
        if not ready:
            return
        n, scales = cfg.directions, torch.tensor(cfg.step_scales)
        dirs = [torch.randn((n, *s.z.shape), generator=s.job.generator) for s in ready]
        batch = torch.cat([torch.cat([s.image(s.z + cfg.sigma * u), s.image(s.z - cfg.sigma * u)])
                           for s, u in zip(ready, dirs, strict=True)])  # per probe (2n, C, H, W)
        targets = torch.cat([torch.full((2 * n,), s.job.target) for s in ready])
        reached = torch.cat([torch.full((2 * n,), s.reached) for s in ready])
        losses = _phase_loss(oracle.predict_proba(batch), targets, reached).reshape(len(ready), 2, n)
        candidates = []
        for s, u, lp in zip(ready, dirs, losses, strict=True):
            grad = (((lp[0] - lp[1]) / (2 * cfg.sigma)).float()[:, None, None, None] * u).mean(0)
            unit = grad / grad.pow(2).mean().sqrt().clamp_min(1e-12)  # RMS 1
            if cfg.momentum and s.avg is not None:
                s.avg = cfg.momentum * s.avg + (1 - cfg.momentum) * unit
                unit = s.avg / s.avg.pow(2).mean().sqrt().clamp_min(1e-12)
            else:
                s.avg = unit
            candidates.append(s.z[None] - (s.lr * scales)[:, None, None, None] * unit)  # (E, C, t, t)
        proba = oracle.predict_proba(torch.cat([s.image(z) for s, z in zip(ready, candidates, strict=True)]))
        proba = proba.reshape(len(ready), len(scales), -1)
        for s, z, rows in zip(ready, candidates, proba, strict=True):
            s.queries += self.queries_per_step()
            s.steps += 1
            t = torch.full((rows.shape[0],), s.job.target)
            best = int(_phase_loss(rows, t, torch.full((rows.shape[0],), s.reached)).argmin())
            if best == 0:  # the shortest step won: shorten; the longest: lengthen
                s.lr *= float(scales[0])
            elif best == len(scales) - 1:
                s.lr *= float(scales[-1])
            s.take(z[best], rows[best][None])


def _phase_loss(proba: torch.Tensor, target: torch.Tensor, reached: torch.Tensor) -> torch.Tensor:
    """Per row: the logit margin to the strongest other class until θ predicts the target (reach it), then
    the log-odds of the target (raise its confidence)."""
    return torch.where(reached, log_odds(proba, target), margin_loss(proba, target))


def _live_queries(states: list[_NesState]) -> dict[int, int]:
    """Queries spent so far by the running probes, per class."""
    live: dict[int, int] = {}
    for s in states:
        live[s.job.target] = live.get(s.job.target, 0) + s.queries
    return live


class _NesState:
    """One probe under optimisation: its base image, its tiled perturbation z, the best iterate, its cost."""

    def __init__(self, job: Job, shape: tuple[int, ...], cfg: NesConfig, pool: StartPool | None = None,
                 near: torch.Tensor | None = None, share: int | None = None) -> None:
        self.job, self.shape, self.cfg, self.pool, self.near = job, shape, cfg, pool, near
        self.share = share  # once on target, stop after this many queries (its share of the class budget)
        self.queries, self.steps, self.inits = 0, 0, 0
        self.reached = False  # θ predicts the target at the current iterate
        self.best: tuple[tuple[bool, float], torch.Tensor, torch.Tensor] | None = None
        self.accepted = False
        self.finished = False
        self._new_start()

    def _new_start(self) -> None:
        self.inits += 1
        if self.near is not None and self.inits == 1:  # beside a probe of the class found earlier
            self.base = self.near
        elif self.pool is not None:  # attempt j's starts: the pool's ranks j·max_inits … for its class
            rank = self.job.index * self.cfg.max_inits + self.inits - 1
            self.base = self.pool.start(self.job.target, rank)[0]  # (1, C, H, W)
        else:
            self.base = noise_init(self.shape, self.job.generator)
        self.level = 0
        self.z = self._zeros()
        self.avg: torch.Tensor | None = None  # running average of the unit gradient estimates
        self.lr = self.cfg.lr
        self.loss: float | None = None
        self.reached = False
        self.history: list[float] = []
        self.start_steps = self.steps

    def _zeros(self) -> torch.Tensor:
        tile = self.cfg.tiles[self.level]
        return torch.zeros(self.shape[0], tile, tile)

    def image(self, z: torch.Tensor) -> torch.Tensor:
        """x = clip(base + upsample(z), 0, 1): z (C, t, t) → (1, C, H, W); z (n, C, t, t) → (n, C, H, W)."""
        up = F.interpolate(z if z.dim() == 4 else z[None], size=self.shape[1:], mode="nearest")
        return (self.base + up).clamp(0.0, 1.0)

    def take(self, z: torch.Tensor, proba: torch.Tensor) -> None:
        """Move to ``z`` (θ answered ``proba`` for it); finish, refine the tiles, or restart."""
        c, cfg = self.job.target, self.cfg
        self.z = z
        x = self.image(z)
        on_target = int(proba[0].argmax()) == c
        odds = float(log_odds(proba, c)[0])
        key = (not on_target, odds)  # on target first, then the lower log-odds (the more confident)
        if self.best is None or key < self.best[0]:
            self.best = (key, x, proba)
        if on_target and not self.reached:  # the objective changes from reaching c to raising p_c
            self.reached, self.history, self.avg = True, [], None
        self.loss = odds if self.reached else float(margin_loss(proba, c)[0])
        if float(proba[0, c]) >= cfg.threshold:
            self.best, self.accepted, self.finished = (key, x, proba), True, True
            return
        if self.share is not None and on_target and self.queries >= self.share:
            self.finished = True  # on target and its share of the class budget spent: keep the best iterate
            return
        if self.steps - self.start_steps >= cfg.max_steps:
            if self.inits >= cfg.max_inits:
                self.finished = True
            else:
                self._new_start()
            return
        self.history.append(self.loss)
        h, k = self.history, cfg.patience
        if len(h) > k and min(h[:-k]) - min(h[-k:]) < cfg.min_improvement and self.level < len(cfg.tiles) - 1:
            self.base, self.level = x, self.level + 1  # bake the coarse perturbation in, refine
            self.z, self.history, self.avg = self._zeros(), [], None

    def made(self, unfinished: bool = False) -> Made:
        assert self.best is not None
        return Made(x=self.best[1], accepted=self.accepted, queries=self.queries, steps=self.steps,
                    inits=self.inits, proba=self.best[2], unfinished=unfinished)
