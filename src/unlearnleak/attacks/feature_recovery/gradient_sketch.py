"""A sample's own gradient as decoder input: unit-normalised and count-sketched to a fixed size (issue 16).

For k = 1, ∇* is the deleted sample's gradient ∇_θ ℓ(x, y) up to a positive scale (``target_gradient``), and it
holds far more of x than the penultimate features the output layer gives away (those are one of its tensors).
A decoder can read it when it is trained on the same kind of input: the public images' own gradients on the
same model, each scaled to unit norm over all trainable parameters (the scale of ∇* is the unlearning's step
size, unknown) and compressed tensor by tensor with a count sketch — every entry added, with a random sign, to one
of n buckets; tensors of at most n entries are kept whole. A count sketch needs O(entries) memory, so it fits
any model (a dense random projection of a ResNet's 2.4 M-entry convolution to 1,024 would need 2.4 G numbers).
The buckets and signs are drawn from a seed, so the public images' gradients and ∇* are sketched alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from unlearnleak.progress import track


class GradientSketch:
    """Sketch of one model's gradients: ``names`` (its trainable parameters, in order) with their sizes, ``size``
    buckets per tensor, buckets and signs drawn from ``seed``."""

    def __init__(self, names: Sequence[str], numels: Sequence[int], size: int, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"a gradient sketch needs at least one bucket per tensor, got {size}")
        self.names, self.size = tuple(names), int(size)
        generator = torch.Generator().manual_seed(1_000_003 + int(seed))
        self._hash: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, numel in zip(self.names, numels, strict=True):
            if numel > size:
                bucket = torch.randint(size, (int(numel),), generator=generator)
                sign = torch.randint(2, (int(numel),), generator=generator).float().mul_(2).sub_(1)
                self._hash[name] = (bucket, sign)
        self.dim = sum(min(int(n), self.size) for n in numels)

    @classmethod
    def of(cls, model: nn.Module, size: int, seed: int = 0) -> GradientSketch:
        """The sketch of ``model``'s trainable parameters."""
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return cls([n for n, _ in params], [p.numel() for _, p in params], size, seed)

    def __call__(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """(n, dim) sketches of n gradients given per parameter as (n, *shape), each scaled to unit total norm."""
        flat = [grads[name].reshape(grads[name].shape[0], -1).float().cpu() for name in self.names]
        norm = torch.cat(flat, 1).norm(dim=1, keepdim=True).clamp_min(1e-30)
        parts = []
        for name, g in zip(self.names, flat, strict=True):
            g = g / norm
            if name in self._hash:
                bucket, sign = self._hash[name]
                g = torch.zeros(g.shape[0], self.size).index_add_(1, bucket, g * sign)
            parts.append(g)
        return torch.cat(parts, 1)


def per_sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         names: Sequence[str]) -> dict[str, torch.Tensor]:
    """∇_θ CE(model(x_i), y_i) for each row i, per parameter of ``names``, shape (n, *param shape); the model as
    it is (eval mode for batch norm's running statistics, as the inversion runs it). ``torch.func.vmap`` where
    the model allows it, else one backward pass per row (the same numbers, slower)."""
    wanted = set(names)
    params = {n: p.detach() for n, p in model.named_parameters() if n in wanted}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in wanted}
    buffers = dict(model.named_buffers())

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**p, **frozen}, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    try:
        found: dict[str, torch.Tensor] = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
        return {n: found[n] for n in names}
    except (RuntimeError, NotImplementedError):  # e.g. data-dependent control flow or in-place ops in forward
        rows = []
        for xi, yi in zip(x, y, strict=True):
            p = {n: v.clone().requires_grad_(True) for n, v in params.items()}
            g = torch.autograd.grad(loss(p, xi, yi), [p[n] for n in names], materialize_grads=True)
            rows.append(g)
        return {n: torch.stack([r[i] for r in rows]) for i, n in enumerate(names)}


MAX_BATCH_ENTRIES = 1 << 27  # gradient entries held at once (0.5 GiB of float32): fewer images per batch on big models


def batch_size_for(entries: int, batch_size: int = 64) -> int:
    """Images per batch of per-sample gradients: ``batch_size`` or fewer, so that a batch holds at most
    ``MAX_BATCH_ENTRIES`` gradient entries of a model with ``entries`` trainable ones."""
    return max(1, min(batch_size, MAX_BATCH_ENTRIES // max(1, entries)))


def sketched_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sketch: GradientSketch, *,
                       batch_size: int = 64, desc: str | None = None) -> torch.Tensor:
    """(n, sketch.dim) sketches of the images' own gradients on ``model`` (float32, CPU), ``batch_size`` images
    at a time or fewer, so that a batch's gradients hold at most ``MAX_BATCH_ENTRIES`` numbers; ``desc`` shows a
    progress bar over the batches."""
    device = next(model.parameters()).device
    wanted = set(sketch.names)
    entries = sum(p.numel() for n, p in model.named_parameters() if n in wanted)
    batch_size = batch_size_for(entries, batch_size)
    starts = range(0, x.shape[0], batch_size)
    out = [sketch(per_sample_gradients(model, x[s:s + batch_size].to(device), y[s:s + batch_size].to(device),
                                       sketch.names))
           for s in (starts if desc is None else track(starts, desc))]
    return torch.cat(out) if out else torch.zeros(0, sketch.dim)


def drawn_labels(model: nn.Module, x: torch.Tensor, seed: int, batch_size: int = 256,
                 desc: str | None = None) -> torch.Tensor:
    """One label per image drawn from the model's predicted class probabilities (seeded): the labels the public
    images' gradients are taken with. A deleted sample carries its true label, which the model is no more sure
    of than its predictions say; measured, this decoded better than the public rows' true labels on Fig. 3
    (docs/feature_recovery.md, "Gradient inputs"), and it needs no labels, so a folder of images serves; ``desc``
    shows a progress bar (a forward pass over the images: minutes on a wide network)."""
    device = next(model.parameters()).device
    starts = range(0, x.shape[0], batch_size)
    with torch.no_grad():
        probs = torch.cat([F.softmax(model(x[s:s + batch_size].to(device)).float(), 1).cpu()
                           for s in (starts if desc is None else track(starts, desc))])
    return torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(int(seed) + 2)).squeeze(1)
