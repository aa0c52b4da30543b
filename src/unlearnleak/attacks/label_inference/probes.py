"""Probe generators: inputs that the original model assigns to a chosen class with high confidence (docs/paper.md §4).

Probes are made once, against the original model θ only, and stored with θ's answers (a
:class:`~unlearnleak.attacks.label_inference.probeset.ProbeSet`); after the deletion they are replayed to θ_u.

Generators live in a registry (``PROBE_GENERATORS``); each is a :class:`ProbeGenerator` subclass with a
pydantic config (``extra="forbid"``), a ``_check_params`` validation and a readable ``repr``:

- ``zoo``      — the paper's zeroth-order coordinate-wise Adam (black-box; zeroth_order.py).
- ``nes``      — our query-efficient black-box generator: antithetic NES with momentum and a line search in a
                 coarse-to-fine tiled space, many probes side by side in shared oracle batches (zeroth_order.py).
- ``gradient`` — white-box probes for a user who holds θ's weights (this file).
- ``public``   — real held-out samples that θ classifies confidently (black-box; this file).

Every probe (c, j) — class c, j-th probe — draws its randomness from its own seed derived from
(seed, c, j), so a probe does not depend on which others were made or in which order. Probes are made
round-robin over classes (probe 0 of every class, then probe 1, …), so a run stopped by ``max_seconds``
or by the oracle's query budget still covers the classes evenly.
"""

from __future__ import annotations

import itertools
import math
import time
from abc import ABC
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from unlearnleak.attacks.closed_forms import log_odds as log_odds  # re-exported; defined once there
from unlearnleak.attacks.label_inference.probeset import ProbeSet
from unlearnleak.attacks.label_inference.starts import (
    ClassSchedule,
    PublicData,
    StartPool,
    StartSettings,
    keep_per_class,
)
from unlearnleak.errors import ConfigError, QueryBudgetExceeded
from unlearnleak.oracle import ModelOracle, Oracle
from unlearnleak.progress import Task
from unlearnleak.registry import Registry


class GeneratorConfig(BaseModel):
    """Base of every generator's configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Job:
    """One probe to make: its class, its index within the class and its own random generator."""

    target: int
    index: int
    generator: torch.Generator


class Jobs:
    """The probes asked for, created one at a time in round-robin order (probe 0 of every class, then 1, …).

    Nothing here grows with ``per_class``: a run asked for 10⁹ probes per class and stopped by its time
    limit holds memory only for the probes it made (issue 12).
    """

    def __init__(self, classes: Sequence[int], per_class: int, seed: int) -> None:
        self.classes, self.per_class, self.seed = list(classes), int(per_class), int(seed)

    def __len__(self) -> int:
        return len(self.classes) * self.per_class

    def job(self, target: int, index: int) -> Job:
        """Probe ``index`` of class ``target``, with its own random stream."""
        return Job(target, index, torch.Generator().manual_seed(probe_seed(self.seed, target, index)))

    def __iter__(self) -> Iterator[Job]:
        for j in range(self.per_class):
            for c in self.classes:
                yield self.job(c, j)

    def of_class(self, target: int) -> Iterator[Job]:
        """The jobs of one class, in index order."""
        for j in range(self.per_class):
            yield self.job(target, j)


@dataclass(frozen=True)
class Made:
    """One finished probe: the input (1, *shape), whether it reached the threshold, what it cost, and θ's
    answer (1, K) seen for it during generation (None when the generator did not query it)."""

    x: torch.Tensor
    accepted: bool
    queries: int
    steps: int = 0
    inits: int = 1
    proba: torch.Tensor | None = None
    unfinished: bool = False  # cut short by the time limit (then never accepted)


@dataclass
class RunLimits:
    """Stops a generation run: a wall-clock deadline (None: none)."""

    deadline: float | None = None

    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline


def probe_seed(seed: int, target: int, index: int) -> int:
    """A well-mixed seed for probe ``index`` of class ``target``."""
    return int(np.random.SeedSequence([seed, target, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def noise_init(input_shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """The paper's probe start: Gaussian noise clipped to [0, 1] (docs/paper.md §4.2), shape (1, *input_shape)."""
    return torch.randn((1, *input_shape), generator=generator).clamp_(0.0, 1.0)


class ProbeGenerator(ABC):
    """Makes probes for chosen classes.

    Subclasses set ``black_box``, ``Config`` and either ``_make`` (one probe at a time) or, with
    ``parallel = True``, ``_make_many`` (probes side by side); ``register_generator`` sets ``name``.
    """

    name: ClassVar[str]
    black_box: ClassVar[bool] = True
    Config: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    parallel: ClassVar[bool] = False  # True: _make_many optimises several probes side by side
    image_only: ClassVar[bool] = False  # True: refuses inputs other than images (C, H, W)
    needs_public: ClassVar[bool] = False  # True: needs held-out real data (``public=``)

    def __init__(self, config: GeneratorConfig | None = None, **params: Any) -> None:
        if config is not None and params:
            raise ConfigError(f"give {self.name} probes either a config or keyword parameters, not both")
        try:
            self.config = config if config is not None else self.Config(**params)
        except ValidationError as exc:
            raise ConfigError(f"invalid parameters for the {self.name!r} probe generator:\n{exc}") from None
        if not isinstance(self.config, self.Config):
            raise ConfigError(f"{self.name!r} needs a {self.Config.__name__}, got {type(self.config).__name__}")
        self._check_params()

    def _check_params(self) -> None:  # noqa: B027  (an optional hook, not abstract)
        """Cross-field validation (single fields are validated by the pydantic config)."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({fields})"

    def generate(self, target: Oracle | nn.Module, *, num_classes: int, per_class: int,
                 input_shape: tuple[int, ...], seed: int = 0, classes: Sequence[int] | None = None,
                 public: PublicData | None = None, max_seconds: float | None = None,
                 device: str | torch.device = "cpu") -> ProbeSet:
        """Make ``per_class`` probes for each class in ``classes`` (default: all) against ``target``.

        Args:
            target: the original model's oracle (black-box generators; a module is wrapped in a
                :class:`ModelOracle`) or the model itself (white-box ``gradient``).
            max_seconds: stop after this long; the probes finished by then are returned and ``notes`` says
                so. A one-at-a-time generator (``zoo``) also keeps the probe it was working on, flagged
                unfinished and not accepted; side-by-side generators drop unfinished probes.
        """
        classes = list(range(num_classes)) if classes is None else [int(c) for c in classes]
        if per_class < 1:
            raise ConfigError(f"per_class must be >= 1, got {per_class}")
        if any(not 0 <= c < num_classes for c in classes):
            raise ConfigError(f"classes must lie in [0, {num_classes}), got {classes}")
        oracle = self._oracle(target, num_classes, input_shape, device)
        started = time.perf_counter()
        limits = RunLimits(None if max_seconds is None else started + max_seconds)
        jobs = Jobs(classes, per_class, seed)  # lazy: made as the generator asks for them
        spent_before = oracle.queries
        self._schedule: ClassSchedule | None = None  # set by generators that schedule attempts per class
        self._pool: StartPool | None = None
        made: list[tuple[Job, Made]] = []
        notes = ""
        try:
            made = self._run_jobs(oracle, target, jobs, limits, public)
        except _Stopped as stop:
            made, notes = stop.made, stop.reason
        if self._schedule is not None:
            made = keep_per_class(made, per_class)
        made.sort(key=lambda jm: (jm[0].index, classes.index(jm[0].target)))  # round-robin job order
        if not made:
            raise ConfigError(f"{self.name} made no probe: {notes or 'no job finished'}")
        x = torch.cat([m.x for _, m in made]).float()
        proba, note = self._final_answers(oracle, x, made)
        notes = "; ".join(n for n in (notes, note) if n)
        total = oracle.queries - spent_before
        if not self.black_box:  # white-box evaluations were not oracle queries; count them too
            total += sum(m.queries for _, m in made)
        if len(made) < len(jobs) and not notes:
            notes = f"made {len(made)} of {len(jobs)} probes"
        target_t = torch.tensor([j.target for j, _ in made])
        extra: dict[str, Any] = {}
        if self._schedule is not None:
            extra.update(self._schedule.report())
        if self._pool is not None:
            extra.update({"pool_source": self._pool.source, "pool_size": len(self._pool),
                          "pool_predicted": self._pool.predicted_counts()})
        missing = self._missing_notes(classes, target_t, proba, made, extra, stopped=bool(notes))
        notes = "; ".join(n for n in (notes, missing) if n)
        return ProbeSet(
            x=x, target=target_t, original_proba=proba,
            queries=torch.tensor([m.queries for _, m in made]), accepted=torch.tensor([m.accepted for _, m in made]),
            generator=self.name, params={**self.config.model_dump(mode="json"), "seed": seed,
                                         "per_class": per_class, "classes": classes,
                                         "steps": [m.steps for _, m in made],
                                         "inits": [m.inits for _, m in made], **extra},
            total_queries=total, seconds=time.perf_counter() - started, black_box=self.black_box, notes=notes)

    def _missing_notes(self, classes: list[int], target: torch.Tensor, proba: torch.Tensor,
                       made: list[tuple[Job, Made]], extra: dict[str, Any], stopped: bool = False) -> str:
        """One clause per class that ends with no probe θ predicts as it, saying what was tried."""
        on_target = proba.argmax(dim=1) == target
        clauses = []
        for i, c in enumerate(classes):
            if bool((on_target & (target == c)).any()):
                continue
            tried = [m for j, m in made if j.target == c]
            best = max((float(m.proba[0, c]) for m in tried if m.proba is not None), default=math.nan)
            reached = "" if math.isnan(best) else f"; the best reached p_{c} = {best:.2g}"
            if stopped and not tried:
                clauses.append(f"class {c}: the run stopped before a probe of it was finished")
            elif "class_attempts" in extra:
                pool = (f"; {extra['pool_predicted'][c]} of {extra['pool_size']} {extra['pool_source']} starts "
                        f"were predicted {c}" if "pool_predicted" in extra else "")
                n = extra["class_attempts"][i]
                clauses.append(f"class {c}: no probe after {n} attempt{'' if n == 1 else 's'} and "
                               f"{extra['class_queries'][i]:,} queries{reached}{pool}")
            else:
                clauses.append(f"class {c}: {self._why_missing(c, len(tried))}{reached}")
        return ("no probe for " + "; ".join(clauses)) if clauses else ""

    def _why_missing(self, c: int, tried: int) -> str:
        """Why class ``c`` got no probe θ predicts as it (generators without a class schedule)."""
        return f"none of its {tried} probes is predicted {c} by θ" if tried else "no probe was made"

    def _oracle(self, target: Oracle | nn.Module, num_classes: int, input_shape: tuple[int, ...],
                device: str | torch.device) -> Oracle:
        if isinstance(target, Oracle):
            if target.num_classes != num_classes or target.input_shape != tuple(input_shape):
                raise ConfigError(f"the oracle answers {target.num_classes} classes for inputs {target.input_shape}, "
                                  f"but probes were asked for {num_classes} classes of shape {tuple(input_shape)}")
            return target
        if isinstance(target, nn.Module):
            return ModelOracle(target, num_classes=num_classes, input_shape=tuple(input_shape), device=device)
        raise ConfigError(f"probes need an Oracle or a model, got {type(target).__name__}")

    @staticmethod
    def _final_answers(oracle: Oracle, x: torch.Tensor, made: list[tuple[Job, Made]]) -> tuple[torch.Tensor, str]:
        """θ's answers for the finished probes, recorded now: after the deletion θ cannot be asked again.

        They are asked once more, all probes in one request, because a model's float rounding can depend
        on the batch it runs in (≈1e-9 in p on CPU convolutions): replaying the same batch to θ_u later
        then gives exactly zero change where nothing changed. That query per probe is charged to
        ``total_queries``, not to the per-probe counts. Without budget for it, the answers seen during
        generation are used.
        """
        remaining = oracle.remaining
        if remaining is None or remaining >= x.shape[0]:
            return oracle.predict_proba(x), ""
        seen = [m.proba for _, m in made]
        if any(p is None for p in seen):
            raise QueryBudgetExceeded(f"no query budget left to record θ's answers for {x.shape[0]} probes")
        return torch.cat([p for p in seen if p is not None]).double(), (
            "θ's answers are those seen during generation (no budget left for one batched re-query)")

    def _run_jobs(self, oracle: Oracle, target: Oracle | nn.Module, jobs: Jobs, limits: RunLimits,
                  public: PublicData | None) -> list[tuple[Job, Made]]:
        made: list[tuple[Job, Made]] = []
        bar = _Bar(len(jobs), f"{self.name} probes")
        try:
            if self.parallel:
                for job, result in self._make_many(oracle, target, jobs, limits, public):
                    made.append((job, result))  # collected as they finish: a budget stop keeps them
                    bar.advance()
            else:
                for job in jobs:
                    if limits.expired():
                        raise _Stopped(made, _time_note(made, len(jobs)))
                    one = self._make(oracle, target, job, limits, public)
                    if one is None:
                        raise _Stopped(made, _time_note(made, len(jobs)))
                    made.append((job, one))
                    bar.advance()
        except QueryBudgetExceeded as exc:
            raise _Stopped(made, f"query budget exhausted after {len(made)} of {len(jobs)} probes ({exc})") from exc
        finally:
            bar.close()
        if any(m.unfinished for _, m in made) or (limits.expired() and len(made) < len(jobs)):
            raise _Stopped(made, _time_note(made, len(jobs)))
        return made

    def _make(self, oracle: Oracle, target: Oracle | nn.Module, job: Job, limits: RunLimits,
              public: PublicData | None) -> Made | None:
        """One probe, or None when the time limit stopped it."""
        raise NotImplementedError

    def _make_many(self, oracle: Oracle, target: Oracle | nn.Module, jobs: Jobs, limits: RunLimits,
                   public: PublicData | None) -> Iterator[tuple[Job, Made]]:
        """Several probes side by side (``parallel`` generators), yielded as they finish."""
        raise NotImplementedError


def _time_note(made: list[tuple[Job, Made]], wanted: int) -> str:
    unfinished = sum(m.unfinished for _, m in made)
    extra = f", {unfinished} of them cut short unfinished" if unfinished else ""
    return f"stopped by the time limit after {len(made)} of {wanted} probes{extra}"


class _Stopped(Exception):
    def __init__(self, made: list[tuple[Job, Made]], reason: str) -> None:
        super().__init__(reason)
        self.made, self.reason = made, reason


class _Bar:
    """Progress that generators advance per finished probe (unlearnleak.progress: a bar, lines, or nothing)."""

    def __init__(self, total: int, description: str) -> None:
        self._task = Task(description, total)

    def advance(self) -> None:
        self._task.advance()

    def close(self) -> None:
        self._task.close()


PROBE_GENERATORS: Registry[type[ProbeGenerator]] = Registry("probe generator")


def register_generator(name: str) -> Callable[[type[ProbeGenerator]], type[ProbeGenerator]]:
    """Class decorator: register a ProbeGenerator subclass under ``name`` (and set its ``name``)."""

    def decorator(cls: type[ProbeGenerator]) -> type[ProbeGenerator]:
        cls.name = name
        return PROBE_GENERATORS.register(name)(cls)

    return decorator


def make_generator(name: str, **params: Any) -> ProbeGenerator:
    """The generator registered as ``name``, configured with ``params``."""
    return PROBE_GENERATORS.get(name)(**params)


def black_box_generators() -> list[str]:
    """Names of the generators that need only oracle queries."""
    return [n for n in PROBE_GENERATORS.names() if PROBE_GENERATORS.get(n).black_box]


def generate_probes(generator_name: str, oracle_or_model: Oracle | nn.Module, num_classes: int, per_class: int,
                    input_shape: tuple[int, ...], seed: int = 0, *, classes: Sequence[int] | None = None,
                    public: PublicData | None = None, max_seconds: float | None = None,
                    device: str | torch.device = "cpu", **params: Any) -> ProbeSet:
    """Make probes with the registered generator ``generator_name`` against the ORIGINAL model.

    Args:
        oracle_or_model: θ's oracle (black-box generators) or θ itself (``gradient``).
        public: real data with labels, for the ``public`` generator.
        params: the generator's configuration, e.g. ``threshold=0.9995``.
    """
    return make_generator(generator_name, **params).generate(
        oracle_or_model, num_classes=num_classes, per_class=per_class, input_shape=tuple(input_shape), seed=seed,
        classes=classes, public=public, max_seconds=max_seconds, device=device)


def margin_loss(proba: torch.Tensor, target: torch.Tensor | int) -> torch.Tensor:
    """−(log p_c − max_{j≠c} log p_j): the logit margin of Eq. 8 recovered from probabilities, per row.

    Softmax ratios equal logit differences, so a black-box user can compute the margin from the returned
    probabilities; unlike −log p_c it does not flatten out as p_c → 1.
    """
    logp = proba.double().clamp_min(1e-300).log()
    tgt = torch.as_tensor(target, dtype=torch.long).expand(proba.shape[0])
    own = logp.gather(1, tgt[:, None]).squeeze(1)
    others = logp.scatter(1, tgt[:, None], -torch.inf).amax(dim=1)
    return others - own


# ---------------------------------------------------------------------------------------------- gradient
class GradientConfig(GeneratorConfig, StartSettings):
    """White-box probes: Adam on the pixels of the log-odds of the class, from class-conditional starts
    (starts.py; ``start="noise"``: the paper's clipped noise)."""

    threshold: float = Field(0.9995, gt=0, lt=1)  # accept once θ's p_c reaches this (as zoo)
    lr: float = Field(0.03, gt=0)  # Adam step on the pixels
    max_steps: int = Field(300, ge=1)
    batch: int = Field(100, ge=1)  # probes optimised together (finished ones leave the batch)


def log_odds_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log Σ_{j≠c} e^{z_j} − z_c = log((1 − p_c)/p_c) per row: unlike cross-entropy it keeps its slope as
    p_c → 1, which is where the 0.9995 threshold sits."""
    own = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.scatter(1, target[:, None], -torch.inf).logsumexp(dim=1)
    return others - own


@register_generator("gradient")
class GradientProbes(ProbeGenerator):
    """Probes for a user who holds θ's weights: exact input gradients instead of query estimates.

    ``torch.optim.Adam`` (per-probe state) on the pixels, x kept in [0, 1], minimising
    :func:`log_odds_logits`; a probe stops once θ's p_c reaches the threshold and leaves the batch.
    ``queries`` counts a probe's forward-backward evaluations (white-box work, not black-box queries;
    nothing is asked of an oracle meanwhile).
    """

    black_box = False
    Config = GradientConfig
    parallel = True

    def _oracle(self, target: Oracle | nn.Module, num_classes: int, input_shape: tuple[int, ...],
                device: str | torch.device) -> Oracle:
        if not isinstance(target, nn.Module):
            raise ConfigError("gradient probes need the model's weights (white-box); pass the model, or choose "
                              f"a black-box generator ({', '.join(black_box_generators())})")
        self._device = torch.device(device)
        return ModelOracle(target, num_classes=num_classes, input_shape=tuple(input_shape), device=device)

    def _make_many(self, oracle: Oracle, target: Oracle | nn.Module, jobs: Jobs, limits: RunLimits,
                   public: PublicData | None) -> Iterator[tuple[Job, Made]]:
        assert isinstance(target, nn.Module)
        cfg: GradientConfig = self.config  # type: ignore[assignment]
        model = target.to(self._device).eval()
        if cfg.start == "class":
            self._pool = StartPool.build(oracle, cfg.pool, jobs.seed, public)
        queue = iter(jobs)
        while not limits.expired():  # checked before each batch is allocated
            batch = list(itertools.islice(queue, cfg.batch))
            if not batch:
                break
            yield from self._optimise(model, batch, oracle.input_shape, cfg, limits)

    def _start(self, job: Job, shape: tuple[int, ...]) -> torch.Tensor:
        """The probe's start (1, *shape): the pool's best candidate for its class, or the paper's noise."""
        if self._pool is not None:
            return self._pool.start(job.target, job.index)[0]
        return noise_init(shape, job.generator)

    def _optimise(self, model: nn.Module, jobs: list[Job], shape: tuple[int, ...], cfg: GradientConfig,
                  limits: RunLimits) -> list[tuple[Job, Made]]:
        # one leaf tensor per probe, so that Adam keeps per-probe state and skips finished probes (grad None)
        xs = [self._start(j, shape).to(self._device).requires_grad_(True) for j in jobs]  # (1, *shape)
        optimizer = torch.optim.Adam(xs, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
        target = torch.tensor([j.target for j in jobs], device=self._device)
        done = torch.zeros(len(jobs), dtype=torch.bool)
        steps = torch.zeros(len(jobs), dtype=torch.long)
        for _ in range(cfg.max_steps + 1):
            active = torch.nonzero(~done).flatten()
            if active.numel() == 0 or limits.expired():
                break
            xa = torch.cat([xs[i] for i in active.tolist()])  # (a, *shape)
            logits = model(xa)
            p = torch.softmax(logits.detach().double(), dim=1).gather(1, target[active, None]).squeeze(1)
            reached = (p >= cfg.threshold).cpu()
            done[active[reached]] = True
            if bool(reached.all()):
                continue
            if int(steps[active].max()) >= cfg.max_steps:  # the batch's probes step together
                break
            (grad,) = torch.autograd.grad(log_odds_logits(logits, target[active]).sum(), xa)
            optimizer.zero_grad(set_to_none=True)
            for row, i in enumerate(active.tolist()):
                if not reached[row]:
                    xs[i].grad = grad[row:row + 1]
                    steps[i] += 1
            optimizer.step()
            with torch.no_grad():
                for i in active[~reached].tolist():
                    xs[i].clamp_(0.0, 1.0)
        x = torch.cat([t.detach() for t in xs])
        if limits.expired() and not bool(done.all()):
            return []
        # evaluations: the start plus one per step (the final check of a finished probe included)
        return [(job, Made(x=x[i:i + 1].detach().cpu(), accepted=bool(done[i]), queries=int(steps[i]) + 1,
                           steps=int(steps[i]))) for i, job in enumerate(jobs)]


# ---------------------------------------------------------------------------------------------- public
class PublicConfig(GeneratorConfig):
    """Real samples of each class that θ predicts as that class with at least ``min_confidence``."""

    min_confidence: float = Field(0.9, gt=0, lt=1)
    max_candidates: int = Field(400, ge=1)  # per class: stop screening after this many samples
    chunk: int = Field(20, ge=1)  # candidates screened per query batch


@register_generator("public")
class PublicProbes(ProbeGenerator):
    """Held-out real data as probes: screen samples of class c (in a seeded random order) with θ's oracle
    and keep the first ones θ predicts as c with confidence ≥ ``min_confidence``.

    A class whose screened samples never reach the confidence keeps its most confident correctly
    predicted ones (flagged not accepted). A class none of whose samples θ predicts correctly gets no
    probe, and the probe set's notes say so (the decision then gives no verdict). Each screening query is
    charged to the probes of its class, split evenly.
    """

    Config = PublicConfig
    parallel = True
    needs_public = True

    def _make_many(self, oracle: Oracle, target: Oracle | nn.Module, jobs: Jobs, limits: RunLimits,
                   public: PublicData | None) -> Iterator[tuple[Job, Made]]:
        if public is None:
            raise ConfigError("public probes need real held-out data with labels (public=Dataset or (x, y))")
        cfg: PublicConfig = self.config  # type: ignore[assignment]
        self._reasons: dict[int, str] = {}
        for c in jobs.classes:
            if limits.expired():
                break
            rows = torch.nonzero(public.y == c).flatten()
            if rows.numel() == 0:
                self._reasons[c] = "the public data has no sample of this class"
                continue
            class_jobs = jobs.of_class(c)
            first = next(class_jobs)
            rows = rows[torch.randperm(rows.numel(), generator=first.generator)][:cfg.max_candidates]
            made = self._screen(oracle, public, rows, c, itertools.chain([first], class_jobs),
                                min(jobs.per_class, rows.numel()), cfg)
            if not made:
                self._reasons[c] = f"θ predicts none of the {rows.numel()} screened public samples of it correctly"
            yield from made

    def _why_missing(self, c: int, tried: int) -> str:
        return getattr(self, "_reasons", {}).get(c) or super()._why_missing(c, tried)

    @staticmethod
    def _screen(oracle: Oracle, public: PublicData, rows: torch.Tensor, c: int, jobs: Iterator[Job], want: int,
                cfg: PublicConfig) -> list[tuple[Job, Made]]:
        chosen: list[int] = []
        seen_rows: list[torch.Tensor] = []
        seen_p: list[torch.Tensor] = []
        answers: dict[int, torch.Tensor] = {}
        spent = 0
        for start in range(0, rows.numel(), cfg.chunk):
            if len(chosen) >= want:
                break
            batch = rows[start:start + cfg.chunk]
            proba = oracle.predict_proba(public.x[batch])
            spent += batch.numel()
            answers.update({int(r): a[None] for r, a in zip(batch, proba, strict=True)})
            pc = proba[:, c]
            ok = (proba.argmax(1) == c) & (pc >= cfg.min_confidence)
            chosen += batch[ok].tolist()[:want - len(chosen)]
            right = proba.argmax(1) == c
            seen_rows.append(batch[right])
            seen_p.append(pc[right])
        accepted = [True] * len(chosen)
        if len(chosen) < want:  # fall back to the most confident correct ones
            all_rows, all_p = torch.cat(seen_rows), torch.cat(seen_p)
            extra = [int(r) for r in all_rows[all_p.argsort(descending=True)] if int(r) not in set(chosen)]
            take = extra[:want - len(chosen)]
            chosen += take
            accepted += [False] * len(take)
        if not chosen:
            return []
        share = [spent // len(chosen) + (1 if i < spent % len(chosen) else 0) for i in range(len(chosen))]
        return [(job, Made(x=public.x[r:r + 1].clone(), accepted=a, queries=q, proba=answers[r]))
                for job, r, a, q in zip(jobs, chosen, accepted, share, strict=False)]


# zoo and nes register themselves on import (the package __init__ imports them).
