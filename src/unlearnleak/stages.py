"""The scenario's stages θ0 → θ → θ_u, each cached under the hash of its inputs (unlearnleak.cache.cached_state).

- θ0 (``base``): pretrained on the public rows; key: the data (files' sha256, split, options, holdout, rows), the
  architecture, the pretraining config and seed.
- θ (``original``): θ0 fine-tuned on D_ft; key: θ0's key, D_ft's row indices, the fine-tune config, the seed, the
  device type and the training code. A method that trains its own θ (SISA's shard ensemble) keys it by its name,
  its parameters and its code instead of the fine-tune config.
- θ_u (``unlearned``): the method applied to θ for one forget set; key: θ's key, the method, its validated
  parameters, D_u's positions in D_ft, the fine-tune config (exact unlearning repeats it), the seed, the device
  type and the method's code.

So a sweep over methods or forget sets fine-tunes θ once, and a sweep over defenses or attacks unlearns once. A
cached stage holds the very tensors that were computed, so it gives the numbers a recomputation gives (tested).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from unlearnleak.cache import CachedState, StateDict, cached_state, key_digest
from unlearnleak.models import ModelSpec, build_model, load_weights
from unlearnleak.training import TrainConfig, train
from unlearnleak.unlearning import UNLEARNING, UnlearningContext, check_params, state_of, unlearn
from unlearnleak.unlearning.base import ORIGINAL_TRAINERS

if TYPE_CHECKING:
    from unlearnleak.data import Dataset

StageName = Literal["base", "original", "unlearned"]
FOLDERS: dict[StageName, str] = {"base": "pretrained", "original": "finetuned", "unlearned": "unlearned"}


@dataclass(frozen=True)
class Stage:
    """One stage's weights, the key they are cached under, and whether they came from the cache."""

    name: StageName
    spec: ModelSpec  # the architecture of ``state`` (a method that trains its own θ may change it)
    state: StateDict
    key: str  # 16 hex digits of the sha256 of the stage's inputs
    cached: bool
    info: Mapping[str, Any]  # recorded when computed: seconds, and for θ_u the method's cost
    refused: str | None = None  # why an entry under this key was not used (it was recomputed)
    base: StateDict | None = None  # θ0 in ``spec``'s architecture (SISA: θ0 in every member), for θ

    def record(self) -> dict[str, Any]:
        """What the run record says about this stage."""
        out: dict[str, Any] = {"key": self.key, "cached": self.cached, **self.info}
        if self.refused is not None:
            out["refused"] = f"a cache entry was refused and recomputed: {self.refused}"
        return out


def _quiet_check(spec: ModelSpec, what: str) -> Any:
    """A check that ``state`` fits ``spec`` (keys, shapes), leaving the global RNG as it was."""

    def check(state: StateDict) -> None:
        with torch.random.fork_rng(devices=[]):  # initialising the (overwritten) weights must not move the RNG
            model = build_model(spec)
        load_weights(model, state, what=what)

    return check


def _code(*objects: Any) -> str | None:
    """sha256 (16 hex) of the source of the modules defining ``objects``; None when one cannot be read."""
    digest = hashlib.sha256()
    for obj in objects:
        module = inspect.getmodule(obj)
        try:
            digest.update(inspect.getsource(module).encode())  # type: ignore[arg-type]
        except (OSError, TypeError):
            return None
    return digest.hexdigest()[:16]


def _run(name: StageName, spec: ModelSpec, path: Path, key: dict[str, Any], compute: Any,
         base: StateDict | None = None) -> Stage:
    """The stage from the cache entry ``path`` (or computed into it); uncached when its code is unreadable."""
    if key.get("code", "") is None:  # a method defined where its source cannot be read: never cached
        state, info = compute()
        return Stage(name, spec, state, key_digest(key), False, {**info, "cache": "off: the code's source is not "
                                                                   "readable, so a change to it could not be seen"},
                     base=base)
    found: CachedState = cached_state(path, key, compute, _quiet_check(spec, f"cached {name} model {path}"))
    return Stage(name, spec, found.state, key_digest(key), found.cached, found.info, found.refused, base)


def _device_type(device: str) -> str:
    return torch.device(device).type


# ---- θ0 -----------------------------------------------------------------------------------------------------


def base_key(dataset: str, split: str, options: Mapping[str, Any], holdout: int, train_set: Dataset,
             spec: ModelSpec, pretrain: TrainConfig, seed: int, pretrain_rows: int | None) -> dict[str, Any]:
    """θ0's key (unchanged since θ0 was first cached, so that earlier entries still hold)."""
    key: dict[str, Any] = {"dataset": dataset, "split": split, "options": dict(options), "holdout": holdout,
                           "files": [f.sha256 for f in train_set.provenance.files], "n": len(train_set),
                           "spec": spec.to_dict(), "pretrain": pretrain.model_dump(mode="json"), "seed": seed,
                           "version": 1}
    if pretrain_rows is not None:  # only when set, so that the cache keys of earlier θ0s still hold
        key["pretrain_rows"] = pretrain_rows
    return key


def base_stage(root: Path, key: dict[str, Any], spec: ModelSpec, public: Dataset, pretrain: TrainConfig, *,
               seed: int, device: str) -> Stage:
    """θ0 pretrained on ``public`` (cached under ``key``)."""

    def compute() -> tuple[StateDict, dict[str, Any]]:
        torch.manual_seed(seed)  # parameter initialisation
        model = build_model(spec)
        started = time.perf_counter()
        train(model, public.x, public.y, pretrain, seed=seed, device=device, desc="pretraining θ0")
        return state_of(model), {"seconds": round(time.perf_counter() - started, 3)}

    name = f"{key['dataset']}-{spec.name}-{key_digest(key)}.safetensors"
    return _run("base", spec, root / FOLDERS["base"] / name, key, compute)


# ---- θ ------------------------------------------------------------------------------------------------------


def finetune(spec: ModelSpec, base: StateDict, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *,
             seed: int, device: str = "cpu", keep: torch.Tensor | None = None) -> StateDict:
    """θ = θ0 fine-tuned on (x, y) (optionally only the ``keep`` rows, in the same order); not cached."""
    model = build_model(spec)
    load_weights(model, {k: v.clone() for k, v in base.items()})
    train(model, x, y, config, seed=seed, device=device, keep=keep, desc="fine-tuning θ")
    return state_of(model)


def original_stage(root: Path, base: Stage, x_ft: torch.Tensor, y_ft: torch.Tensor, ft_indices: torch.Tensor,
                   finetune_config: TrainConfig, method: str, params: Mapping[str, Any], *, seed: int,
                   device: str) -> Stage:
    """θ: θ0 fine-tuned on D_ft, or, for a method that trains its own θ (SISA), that method's θ."""
    trainer = ORIGINAL_TRAINERS.get(method)
    key: dict[str, Any] = {"stage": "original", "base": base.key, "ft_indices": ft_indices.tolist(), "seed": seed,
                           "device": _device_type(device), "version": 1}
    if trainer is None:
        key.update(finetune=finetune_config.model_dump(mode="json"), code=_code(train))
        spec, pair_base = base.spec, base.state

        def compute() -> tuple[StateDict, dict[str, Any]]:
            started = time.perf_counter()
            state = finetune(base.spec, base.state, x_ft, y_ft, finetune_config, seed=seed, device=device)
            return state, {"seconds": round(time.perf_counter() - started, 3)}
    else:
        parsed = check_params(method, params).model_dump(mode="json")
        key.update(trainer=method, params=parsed, code=_code(trainer.train, train))
        spec, pair_base = trainer.architecture(base.spec, base.state, parsed)

        def compute() -> tuple[StateDict, dict[str, Any]]:
            started = time.perf_counter()
            state = trainer.train(base.spec, base.state, x_ft, y_ft, parsed, seed=seed, device=device)
            return state, {"seconds": round(time.perf_counter() - started, 3), "trained_by": method}

    name = f"{spec.name}-{key_digest(key)}.safetensors"
    return _run("original", spec, root / FOLDERS["original"] / name, key, compute, base=pair_base)


# ---- θ_u ----------------------------------------------------------------------------------------------------


def unlearned_stage(root: Path, original: Stage, x_ft: torch.Tensor, y_ft: torch.Tensor, positions: torch.Tensor,
                    finetune_config: TrainConfig, method: str, params: Mapping[str, Any], *, seed: int,
                    device: str) -> Stage:
    """θ_u: ``method`` applied to θ for the forget set at ``positions`` of D_ft (its cost recorded)."""
    parsed = check_params(method, params).model_dump(mode="json")
    function = UNLEARNING.get(method)
    from unlearnleak.unlearning import base as unlearning_base
    from unlearnleak.unlearning import gradients

    key = {"stage": "unlearned", "original": original.key, "method": method, "params": parsed,
           "forget_positions": positions.tolist(), "finetune": finetune_config.model_dump(mode="json"),
           "seed": seed, "device": _device_type(device), "code": _code(function, train, unlearning_base, gradients),
           "version": 1}
    mask = torch.zeros(x_ft.shape[0], dtype=torch.bool)
    mask[positions] = True

    def compute() -> tuple[StateDict, dict[str, Any]]:
        ctx = UnlearningContext(spec=original.spec, original=original.state, base=original.base, x_train=x_ft,
                                y_train=y_ft, forget_mask=mask, finetune=finetune_config, params=dict(params),
                                seed=seed, device=device)
        started = time.perf_counter()
        state = unlearn(method, ctx)
        return state, {"seconds": round(time.perf_counter() - started, 3), "method": method,
                       "backward_passes": ctx.meter.backward_passes, "sample_gradients": ctx.meter.sample_gradients,
                       "notes": json.loads(json.dumps(ctx.meter.notes, default=float))}

    name = f"{original.spec.name}-{method}-{key_digest(key)}.safetensors"
    return _run("unlearned", original.spec, root / FOLDERS["unlearned"] / name, key, compute)


# ---- θ and θ_u together -------------------------------------------------------------------------------------


def theta_stages(root: Path, base: Stage, x_ft: torch.Tensor, y_ft: torch.Tensor, ft_indices: torch.Tensor,
                 positions: torch.Tensor, finetune_config: TrainConfig, method: str,
                 params: Mapping[str, Any] | None = None, *, seed: int, device: str = "cpu") -> tuple[Stage, Stage]:
    """(θ, θ_u) for D_ft = (x_ft, y_ft) (its train-split rows ``ft_indices``) and D_u at ``positions`` of D_ft: what
    the scenario, the experiment pipeline and the benchmarks call, so that each reuses the others' cached stages."""
    params = dict(params or {})
    original = original_stage(root, base, x_ft, y_ft, ft_indices, finetune_config, method, params, seed=seed,
                              device=device)
    unlearned = unlearned_stage(root, original, x_ft, y_ft, positions, finetune_config, method, params, seed=seed,
                                device=device)
    return original, unlearned
