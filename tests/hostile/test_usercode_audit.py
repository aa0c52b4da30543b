"""A user model file that exits or raises — at import, while built, or in `forward` at any call — gives one
`error:` line naming the file, exit 2, and no results folder: never a silent exit 0 or a traceback."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from hostile_pairs import MODEL, TinyPair, write_pair
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.models.custom import UserCodeError

runner = CliRunner()
FAST = ["--per-class", "1", "--generator", "zoo", "--set", "max_iter=2", "--set", "max_rounds=1", "--set",
        "max_inits=1", "--set", "nb_parallel=2", "--iterations", "2"]

_FORWARD = "    def forward(self, x):\n        return self.fc(torch.flatten(x, 1))\n"
_INIT = "        self.fc = nn.Linear(size, num_classes)\n"
CALLS = "\nCALLS = [0]\n"


def _in_forward(statement: str, after_calls: int = 0) -> str:
    """MODEL with ``statement`` run in forward once it has been called ``after_calls`` times."""
    body = (f"    def forward(self, x):\n        CALLS[0] += 1\n        if CALLS[0] > {after_calls}:\n"
            f"            {statement}\n        return self.fc(torch.flatten(x, 1))\n")
    return MODEL.replace(_FORWARD, body) + CALLS


CODES = {
    "sys.exit(0)-at-import": ("import sys\nsys.exit(0)\n" + MODEL, ("sys.exit(0)", "on import")),
    "sys.exit(3)-at-import": ("import sys\nsys.exit(3)\n" + MODEL, ("sys.exit(3)", "on import")),
    "sys.exit(message)-at-import": ("import sys\nsys.exit('bye')\n" + MODEL, ("sys.exit('bye')",)),
    "raise-at-import": (MODEL + "\nraise RuntimeError('boom at import')\n", ("RuntimeError", "boom at import")),
    "exit()-at-import": (MODEL + "\nexit(0)\n", ("sys.exit(0)", "on import")),
    "sys.exit(0)-in-init": (MODEL.replace(_INIT, _INIT + "        import sys; sys.exit(0)\n"),
                            ("sys.exit(0)", "while being built")),
    "sys.exit(0)-in-forward": (_in_forward("import sys; sys.exit(0)"), ("sys.exit(0)", "in forward")),
    "sys.exit(3)-in-forward": (_in_forward("import sys; sys.exit(3)"), ("sys.exit(3)", "in forward")),
    "sys.exit(0)-in-forward-during-the-attack": (
        _in_forward("import sys; sys.exit(0)", after_calls=1), ("sys.exit(0)", "in forward")),
    "raise-in-forward-during-the-attack": (
        _in_forward("raise ValueError('third call')", after_calls=1), ("ValueError: third call", "in forward")),
}


@pytest.mark.parametrize("case", sorted(CODES))
def test_user_code_that_exits_or_raises_is_one_error_line(case: str, tmp_path: Path) -> None:
    code, needles = CODES[case]
    pair = write_pair(tmp_path / "user", model_code=code)
    out = tmp_path / "o"
    result = runner.invoke(app, pair.args(out, *FAST))
    one_error(result, str(pair.model_file), *needles)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["user"]


def test_a_module_path_that_exits_at_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "evilpkg_for_test"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    pair = write_pair(tmp_path / "user")
    result = runner.invoke(app, pair.args(tmp_path / "o", *FAST, model_def="evilpkg_for_test.models:Net"))
    one_error(result, "'evilpkg_for_test.models'", "sys.exit(0)", "on import")
    assert not (tmp_path / "o").exists()


def test_a_well_behaved_user_model_still_audits(tmp_path: Path) -> None:
    pair: TinyPair = write_pair(tmp_path / "user")
    result = runner.invoke(app, pair.args(tmp_path / "o", *FAST))
    assert result.exit_code in (0, 3), result.output  # 3: no label verdict at FAST's tiny probe budget
    assert (tmp_path / "o" / "report.json").is_file()


def test_the_forward_guard_is_transparent(tmp_path: Path) -> None:
    """Same outputs, same state-dict keys, still an instance of the user's class; a deep copy keeps its own
    weights and its guard; an exit in the copy's forward is still caught."""
    pair = write_pair(tmp_path / "user", model_code=_in_forward("import sys; sys.exit(4)", after_calls=2))
    spec = ModelSpec(f"{pair.model_file}:Net", (4,), 3, (0.0,), (1.0,), {})
    model = build_model(spec)
    net = model.net
    module = sys.modules[type(net).__mro__[1].__module__]
    assert isinstance(net, type(net).__mro__[1]) and type(net).__name__ == "Net"
    assert list(model.state_dict()) == ["mean", "std", "net.fc.weight", "net.fc.bias"]
    x = torch.rand(5, 4)
    expected = torch.flatten(x, 1) @ net.fc.weight.T + net.fc.bias
    assert torch.equal(model(x), expected)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.net.fc.bias.add_(1.0)
    assert torch.allclose(twin(x), expected + 1.0)
    assert module.CALLS[0] == 2
    with pytest.raises(UserCodeError, match=r"sys.exit\(4\) in forward"):
        twin(x)
    with pytest.raises(UserCodeError, match=r"sys.exit\(4\) in forward"):
        model(x)
