"""A user's own checkpoint files → state dicts of our ``Normalized`` layout, without running any code.

Accepted: safetensors, or a PyTorch state dict read with ``torch.load(weights_only=True)`` (a pickle that
would execute code is refused by torch's restricted unpickler, and we say so). A state dict saved from the
bare network (no ``Normalized`` wrapper: no ``net.`` prefix, no ``mean``/``std``) is completed from the
declared normalisation; a ``module.`` prefix (DataParallel) and ``{"state_dict": ...}`` wrappers are unwrapped;
a tied weight saved under one of its names (safetensors' ``save_model``) is given its other names.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from unlearnleak.errors import CheckpointError
from unlearnleak.models import Normalized

StateDict = dict[str, torch.Tensor]
_WRAPPERS = ("state_dict", "model_state_dict", "model")


def read_checkpoint(path: str | Path, flag: str) -> StateDict:
    """The tensors in ``path`` (safetensors or a weights-only torch file); nothing is executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{flag} {path} does not exist")
    with path.open("rb") as handle:
        head = handle.read(16)
    if _looks_like_safetensors(head):
        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{flag} {path} is not a readable safetensors file: {exc}") from exc
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):
        raise CheckpointError(f"{flag} {path} is not a checkpoint: expected a safetensors file or a PyTorch "
                              f"state dict saved with torch.save(model.state_dict(), ...)")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{flag} {path} holds objects beyond tensors ({_pickled(exc)}), refused without "
                              f"running them; save it with torch.save(model.state_dict(), ...) or as "
                              f"safetensors") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{flag} {path} is not a readable PyTorch checkpoint: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return _state_of(obj, path, flag)


def _pickled(exc: pickle.UnpicklingError) -> str:
    """What the refused pickle names (``arch.Net``: a whole model saved with ``torch.save(model)``), without
    torch's advice to load it unsafely or its terminal escape codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found is not None:
        return f"it pickles {found.group(1)}, e.g. a whole model saved with torch.save(model)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else "unsupported content"


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return 0 < size < 100_000_000 and head[8:9] == b"{"


def _state_of(obj: object, path: Path, flag: str) -> StateDict:
    for _ in range(3):
        if isinstance(obj, dict) and len(obj) >= 1:
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner
                continue
        break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{flag} {path} holds a {type(obj).__name__}, not a state dict of tensors; "
                              f"save model.state_dict()")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{flag} {path}: entry {bad!r} is not a tensor; save model.state_dict()")
    return dict(obj)


def to_normalized_layout(state: StateDict, model: Normalized, what: str = "checkpoint") -> StateDict:
    """``state`` in the keys of ``model`` (our wrapper): adds ``net.`` and the declared mean/std if missing.

    Each tensor's kind of dtype must match the model's: floating weights stay floating (an int64 or complex
    checkpoint is refused rather than silently cast), integer buffers stay integer.
    """
    expected = model.state_dict()
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if set(state) != set(expected) and not any(k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in state.items()}
        state.setdefault("mean", expected["mean"].clone())
        state.setdefault("std", expected["std"].clone())
    state = _with_tied_keys(state, model)
    state = _with_batch_counters(state, expected)
    check_dtypes(state, expected, what)
    return state


def _with_batch_counters(state: StateDict, expected: StateDict) -> StateDict:
    """``state`` with batch norm's ``num_batches_tracked`` filled in where a layer's running statistics are
    present without it (older PyTorch, converted checkpoints): the counter only sets the momentum of training
    with ``momentum=None``, never an eval-mode output, which is all the attacks compute."""
    suffix = ".num_batches_tracked"
    missing = [k for k in expected if k.endswith(suffix) and k not in state
               and f"{k.removesuffix(suffix)}.running_mean" in state]
    return {**state, **{k: expected[k].clone() for k in missing}} if missing else state


def _with_tied_keys(state: StateDict, model: Normalized) -> StateDict:
    """``state`` with each tied parameter under all its names: safetensors' ``save_model`` keeps one name of
    weights shared between layers (``head.weight = emb.weight``), the model's state dict lists them all."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    filled = dict(state)
    for group in names.values():
        present = next((name for name in group if name in state), None)
        if present is not None:
            for name in group:
                filled.setdefault(name, state[present])
    return filled


def check_dtypes(state: StateDict, expected: StateDict, what: str) -> None:
    """Refuse complex tensors, and integer or boolean values where the model holds floating ones (and back)."""
    for key, value in state.items():
        want = expected.get(key)
        if want is None:
            continue  # an unexpected key: check_state names it
        if value.is_complex() or value.is_floating_point() != want.is_floating_point():
            got, wanted = (str(t.dtype).removeprefix("torch.") for t in (value, want))
            raise CheckpointError(f"{what}: {key} holds {got} values but the model's {key} is {wanted}; save the "
                                  f"real-valued weights the model was trained with (e.g. model.float().state_dict())")


def check_ground_truth(truth: tuple[torch.Tensor, torch.Tensor | None], input_shape: tuple[int, ...],
                       num_classes: int, k: int | None, what: str) -> None:
    """The deleted samples match the model's input shape and classes (and k if declared), before any compute."""
    x, y = truth
    shape = tuple(int(v) for v in input_shape)
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
        raise CheckpointError(f"{what} holds samples of shape {tuple(x.shape)}; expected (k, "
                              f"{', '.join(map(str, shape))}) for this model's input")
    if not bool(torch.isfinite(x).all()):
        raise CheckpointError(f"{what} holds non-finite values")
    if len(shape) == 3 and (float(x.min()) < 0 or float(x.max()) > 1):
        raise CheckpointError(f"{what} holds pixels in [{float(x.min()):.4g}, {float(x.max()):.4g}]; images must be "
                              f"in [0, 1] (divide 8-bit images by 255)")
    if k is not None and x.shape[0] != k:
        raise CheckpointError(f"{what} holds {x.shape[0]} samples but --forget-size says k = {k}")
    if y is not None:
        if y.numel() != x.shape[0]:
            raise CheckpointError(f"{what} holds {y.numel()} labels for {x.shape[0]} samples")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise CheckpointError(f"{what} holds labels {sorted(set(y.tolist()))[:10]}; labels must lie in "
                                  f"[0, {num_classes}) (--num-classes {num_classes})")
