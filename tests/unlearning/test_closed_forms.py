"""Closed-form pieces against direct computation: the first-order update, HVPs and the inverse-HVP solvers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F
from unlearning_toy import Toy

from unlearnleak.models import ModelSpec, build_model
from unlearnleak.training import TrainConfig
from unlearnleak.unlearning import UnlearningContext, state_of, unlearn
from unlearnleak.unlearning.first_order import relabel
from unlearnleak.unlearning.gradients import hvp_operator, loss_gradient, norm, solve
from unlearnleak.unlearning.second_order import SecondOrderParams, inverse_hvp


def _direct_gradient(toy: Toy, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model = toy.context().fresh_model(toy.original).eval()
    loss = F.cross_entropy(model(toy.x[toy.mask]), y, reduction="sum")
    names = [n for n, _ in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(model.parameters())), strict=True))


def test_first_order_update_is_tau_times_the_gradient_difference(toy: Toy) -> None:
    tau = 0.05
    theta_u = unlearn("first_order", toy.context({"tau": tau}))
    grad = _direct_gradient(toy, toy.y[toy.mask])  # ∇ℓ(Z), summed; Z̃ = ∅ so ∇ℓ(Z̃) = 0
    for name, g in grad.items():
        torch.testing.assert_close(theta_u[name] - toy.original[name], tau * g, rtol=1e-4, atol=1e-6)
    untouched = set(toy.original) - set(grad)
    assert all(torch.equal(theta_u[k], toy.original[k]) for k in untouched)  # normaliser buffers


def test_first_order_with_relabelled_replacement(toy: Toy) -> None:
    tau = 0.05
    theta_u = unlearn("first_order", toy.context({"tau": tau, "replacement": "random_label"}, seed=4))
    y_new = relabel(toy.y[toy.mask], 4, torch.Generator().manual_seed(4))
    assert bool((y_new != toy.y[toy.mask]).all())
    g_old, g_new = _direct_gradient(toy, toy.y[toy.mask]), _direct_gradient(toy, y_new)
    for name in g_old:
        expected = -tau * (g_new[name] - g_old[name])
        torch.testing.assert_close(theta_u[name] - toy.original[name], expected, rtol=1e-4, atol=1e-6)


SMOOTH = ModelSpec("mlp", (8,), 4, (0.0,), (1.0,), {"hidden": [16], "activation": "tanh"})


@pytest.fixture(scope="module")
def smooth() -> UnlearningContext:
    """A tanh MLP at random init on random data: a smooth loss with a non-trivial, indefinite Hessian."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = state_of(build_model(SMOOTH))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(48, 8, generator=g), torch.randint(0, 4, (48,), generator=g)
    mask = torch.zeros(48, dtype=torch.bool)
    mask[:4] = True
    return UnlearningContext(SMOOTH, original=state, base=state, x_train=x, y_train=y, forget_mask=mask,
                             finetune=TrainConfig())


def test_hvp_matches_finite_differences_of_the_gradient(smooth: UnlearningContext) -> None:
    model = smooth.fresh_model(smooth.original).double().eval()
    x, y = smooth.retain_x.double(), smooth.retain_y
    params = list(model.parameters())
    g = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    hv = hvp_operator(model, x, y, damping=0.0)(v)
    eps = 1e-5

    def grad_at(sign: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.add_(sign * eps * vi)
        out = loss_gradient(model, x, y, reduction="mean")
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.sub_(sign * eps * vi)
        return out

    plus, minus = grad_at(1.0), grad_at(-1.0)
    fd = [(a - b) / (2 * eps) for a, b in zip(plus, minus, strict=True)]
    assert norm(fd) > 1e-3  # a real curvature to compare against
    assert norm([a - b for a, b in zip(hv, fd, strict=True)]) <= 1e-6 * norm(fd)
    damped = hvp_operator(model, x, y, damping=0.5)(v)
    for d, h, vi in zip(damped, hv, v, strict=True):
        torch.testing.assert_close(d, h + 0.5 * vi)


@pytest.mark.parametrize(("solver", "iterations", "scale", "bound"),
                         [("cg", 30, 1.0, 1e-4), ("lissa", 60, 2.0, 1e-2)])
def test_inverse_hvp_residual_is_small(smooth: UnlearningContext, solver: str, iterations: int, scale: float,
                                       bound: float) -> None:
    params = SecondOrderParams(solver=solver, damping=0.5, iterations=iterations, scale=scale)
    _, solution = inverse_hvp(replace(smooth, params=params.model_dump()), params)
    assert solution.residual <= bound
    # an independent check: apply H + λI to x and compare with b = −∇ℓ(D_u)
    model = smooth.fresh_model(smooth.original).eval()
    apply = hvp_operator(model, smooth.retain_x, smooth.retain_y, damping=0.5)
    b = [-g for g in loss_gradient(model, smooth.forget_x, smooth.forget_y)]
    ax = apply(solution.x)
    assert norm([a - bi for a, bi in zip(ax, b, strict=True)]) <= bound * norm(b) * 1.01


def test_solver_reports_a_large_residual_when_it_did_not_converge(smooth: UnlearningContext) -> None:
    model = smooth.fresh_model(smooth.original).eval()
    apply = hvp_operator(model, smooth.retain_x, smooth.retain_y, damping=0.5)
    b = loss_gradient(model, smooth.forget_x, smooth.forget_y)
    assert solve(apply, b, solver="lissa", iterations=1, scale=5.0).residual > 0.5


def test_second_order_step_is_tau_times_the_solution(toy: Toy) -> None:
    params = {"damping": 0.1, "tau": 0.1, "iterations": 60}
    ctx = toy.context(params)
    theta_u = unlearn("second_order", ctx)
    assert ctx.meter.notes["hvp_relative_residual"] < 1e-4
    _, solution = inverse_hvp(toy.context(params), SecondOrderParams(**params))
    names = [n for n, _ in ctx.fresh_model(toy.original).named_parameters()]
    for name, x in zip(names, solution.x, strict=True):
        torch.testing.assert_close(theta_u[name] - toy.original[name], -0.1 * x, rtol=1e-4, atol=1e-7)
