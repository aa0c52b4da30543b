"""The decoder's gradient inputs (issue 16): a sample's own gradient, sketched, is what ∇* gives for k = 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from recover_pairs import ascent_pair
from torch import nn
from torch.nn import functional as F

from unlearnleak.attacks.feature_recovery import recover
from unlearnleak.attacks.feature_recovery.decoder import DecoderConfig, cached_decoder, decoder_key, penultimate
from unlearnleak.attacks.feature_recovery.gradient_sketch import (
    GradientSketch,
    drawn_labels,
    per_sample_gradients,
    sketched_gradients,
)
from unlearnleak.attacks.feature_recovery.learned_prior import LearnedPrior
from unlearnleak.attacks.feature_recovery.public_data import public_images
from unlearnleak.attacks.feature_recovery.target_gradient import target_gradient
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.pair import ModelPair
from unlearnleak.unlearning import state_of

SHAPE = (3, 16, 16)
SPEC = ModelSpec("cnn_nobn", SHAPE, 5, (0.5,) * 3, (0.25,) * 3, {"width": 8})
TINY = DecoderConfig(epochs=2, batch_size=16, width=16, gradient_sketch=64)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    noise = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(noise, size=SHAPE[1:], mode="bilinear", align_corners=False)


def _pair(x: torch.Tensor, y: torch.Tensor) -> ModelPair:
    """θ and θ_u = θ + 10⁻³·∇ℓ(D_u): one step of gradient ascent on (x, y)."""
    return ascent_pair(SPEC, x, y)


def test_the_sketch_of_one_samples_update_is_the_sketch_of_its_own_gradient() -> None:
    """What the decoder is trained on (a public image's gradient) and what it reads at attack time (∇* of a
    deleted image) are the same input for k = 1, whatever the unlearning step's size."""
    x, y = _images(1, seed=3), torch.tensor([2])
    pair = _pair(x, y)
    model = pair.model("original")
    sketch = GradientSketch.of(model, 64, seed=0)
    target = target_gradient(pair, mode="approximate")
    from_update = sketch({n: t.unsqueeze(0) for n, t in zip(target.names, target.tensors, strict=True)})
    own = sketched_gradients(model, x, y, sketch)
    assert own.shape == from_update.shape == (1, sketch.dim)
    # up to the float32 rounding of θ_u − θ (a step of 1e-3·∇ beside weights of size ~0.1)
    assert float((from_update - own).norm() / own.norm()) < 1e-3
    other = sketched_gradients(model, _images(1, seed=4), y, sketch)
    assert float((other - own).norm() / own.norm()) > 0.1


def test_small_tensors_are_kept_whole_and_large_ones_sketched_with_unit_total_norm() -> None:
    sketch = GradientSketch(["a", "b"], [3, 100], size=10, seed=0)
    assert sketch.dim == 3 + 10
    grads = {"a": torch.tensor([[3.0, 0.0, 0.0]]), "b": torch.zeros(1, 100)}
    assert torch.equal(sketch(grads), torch.tensor([[1.0, 0, 0] + [0.0] * 10]))
    b = torch.randn(1, 100, generator=torch.Generator().manual_seed(0))
    out = sketch({"a": torch.zeros(1, 3), "b": 5 * b})
    # each gradient is scaled to unit total norm first, so the unlearning step's size does not matter
    assert torch.allclose(out, sketch({"a": torch.zeros(1, 3), "b": b}), atol=1e-6)
    again = GradientSketch(["a", "b"], [3, 100], size=10, seed=0)
    assert torch.equal(again({"a": torch.zeros(1, 3), "b": 5 * b}), out)  # the same seed, the same buckets
    other = GradientSketch(["a", "b"], [3, 100], size=10, seed=1)({"a": torch.zeros(1, 3), "b": 5 * b})
    assert not torch.allclose(other, out, atol=1e-3)


class _Branchy(nn.Module):
    """A forward with data-dependent control flow, which ``vmap`` cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) if float(x.sum()) > 0 else self.b(x)


def test_per_sample_gradients_are_each_rows_own_even_where_vmap_cannot_trace_the_model() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    x[0] = x[0].abs() + 0.1  # one row down each branch at least
    x[1] = -x[1].abs() - 0.1
    for model in (nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), _Branchy()):
        names = [n for n, _ in model.named_parameters()]
        found = per_sample_gradients(model, x, y, names)
        for i in range(5):
            own = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()),
                                      materialize_grads=True)  # the branch not taken: zeros
            for name, g in zip(names, own, strict=True):
                assert torch.allclose(found[name][i], g, atol=1e-6), (type(model).__name__, name, i)


def test_the_public_gradients_take_labels_drawn_from_the_models_predictions() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5)).eval()
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([4.0, 0.0, 0.0, 0.0, -20.0]))  # class 0 likely, class 4 all but never
    x = _images(400)
    drawn = drawn_labels(model, x, seed=0)
    assert drawn.shape == (400,) and drawn.dtype == torch.int64
    assert torch.equal(drawn, drawn_labels(model, x, seed=0)) and not torch.equal(drawn, drawn_labels(model, x, 1))
    counts = torch.bincount(drawn, minlength=5)
    assert counts[0] > 200 and counts[4] == 0 and counts[1:4].sum() > 0, counts  # drawn, not the argmax


def test_the_cache_key_keeps_old_decoders_and_tells_gradient_decoders_apart(tmp_path: Path) -> None:
    """Without the sketch the key is what it was before the option existed (decoders cached then still hit);
    with it, its size is part of the key."""
    model = build_model(SPEC).eval()
    state = state_of(model)
    data = public_images(_images(24), "smooth noise", SHAPE)
    assert DecoderConfig().gradient_sketch == 1024  # on by default
    plain = decoder_key(SPEC, state, data, DecoderConfig(gradient_sketch=0))
    assert "gradient_sketch" not in plain["config"]
    assert decoder_key(SPEC, state, data, TINY)["config"]["gradient_sketch"] == 64
    decoder, info = cached_decoder(model, SPEC, state, data, TINY, cache_dir=tmp_path)
    plain_decoder, plain_info = cached_decoder(model, SPEC, state, data, TINY.model_copy(update={"gradient_sketch": 0}),
                                               cache_dir=tmp_path)
    assert info["cache"] == plain_info["cache"] == "miss" and info["path"] != plain_info["path"]
    width = penultimate(model, _images(1), 5).shape[1]
    assert plain_decoder.features == width  # the penultimate features alone
    assert decoder.features == width + GradientSketch.of(model, 64).dim  # and the sketch


def test_a_negative_sketch_size_is_refused() -> None:
    with pytest.raises(ValidationError, match="gradient_sketch"):
        DecoderConfig(gradient_sketch=-1)


def test_recover_records_what_the_decoder_read_for_one_and_for_several_deleted_samples() -> None:
    public = public_images(_images(32, seed=1), "smooth noise", SHAPE)
    prior = LearnedPrior(public, TINY)
    x, y = _images(1, seed=3), torch.tensor([2])
    one = recover(_pair(x, y), iterations=20, seed=0, learned_prior=prior)
    record = one.config["learned_prior"]
    assert record["status"] == "on" and record["inputs"] == "penultimate features and ∇* sketched to 64 per tensor"
    assert record["decoder"]["config"]["gradient_sketch"] == 64 and one.decoded is not None
    x2, y2 = _images(2, seed=5), torch.tensor([1, 3])
    two = recover(_pair(x2, y2), iterations=20, seed=0, k=2, learned_prior=prior)
    record = two.config["learned_prior"]
    assert record["inputs"].startswith("penultimate features only: ∇* sums 2 samples' gradients")
    assert "gradient_sketch" not in record["decoder"]["config"]  # the features-only decoder, under its own key
    assert two.decoded is not None and two.decoded.shape == (2, *SHAPE)
