"""`unlearnleak audit` on users' unusual architectures: it works, or stops with one `error:` line (exit 2).

Each test writes a small plain-PyTorch model file, fits θ with a few SGD steps on random 16×16 images, makes θ_u
by one gradient-ascent step on the deleted image (as tests/audit/conftest.py does), and runs the audit.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.nn import functional as F
from typer.testing import CliRunner

from unlearnleak.cli import app

runner = CliRunner()
SHAPE = (3, 16, 16)
DELETED_LABEL = 3

HEADER = "import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n\n"

VIT = HEADER + '''
class Net(nn.Module):
    """Patch embedding, a positional-embedding parameter, LayerNorm, multi-head attention, GELU MLP."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 8, stride=8)
        self.pos = nn.Parameter(torch.randn(1, 4, 8) * 0.02)
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        h = self.norm(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        return self.head((t + self.mlp(t)).mean(1))
'''

UNUSED_PARAMETER = HEADER + '''
class Net(nn.Module):
    """A parameter forward never uses (a leftover embedding) and one Linear applied twice."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.leftover = nn.Linear(num_classes, 8, bias=False)
        self.shared = nn.Linear(256, 256)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x):
        h = torch.flatten(torch.sigmoid(self.conv(x)), 1)
        return self.fc(torch.sigmoid(self.shared(torch.sigmoid(self.shared(h)))))
'''


def _load(code: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"arch_{code.stem}", code)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so that torch.save(model) can pickle its class, as a user's would
    spec.loader.exec_module(module)
    return module


def _logits(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out["logits"] if isinstance(out, dict) else out


def user_files(folder: Path, source: str, num_classes: int = 10) -> dict[str, Path]:
    """The model file, θ (torch state dict), θ_u (safetensors) and the deleted image, made as a user would."""
    folder.mkdir(parents=True, exist_ok=True)
    code = folder / "model.py"
    code.write_text(source)
    torch.manual_seed(0)
    net = _load(code).Net(num_classes=num_classes)
    x = torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(1)).to(next(net.parameters()).dtype)
    y = torch.arange(8) % num_classes
    y[0] = DELETED_LABEL % num_classes
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(_logits(net(x)), y).backward()
        opt.step()
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, folder / "before.pt")
    opt.zero_grad()
    (-F.cross_entropy(_logits(net(x[:1])), y[:1])).backward()  # unlearning: one gradient-ascent step
    opt.step()
    save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()},
              str(folder / "after.safetensors"))
    save_file({"images": x[:1].float().contiguous(), "labels": y[:1].contiguous()}, str(folder / "deleted.safetensors"))
    return {"model": code, "before": folder / "before.pt", "after": folder / "after.safetensors",
            "deleted": folder / "deleted.safetensors"}


def audit(files: dict[str, Path], out: Path, *extra: str, num_classes: int = 10) -> Any:
    """Run the white-box audit on ``files`` with a tiny budget (no label inference unless ``extra`` asks)."""
    return runner.invoke(app, ["audit", "--model-def", f"{files['model']}:Net", "--original", str(files["before"]),
                               "--unlearned", str(files["after"]), "--input-shape", ",".join(map(str, SHAPE)),
                               "--num-classes", str(num_classes), "--iterations", "4", "--restarts", "1",
                               "--ground-truth", str(files["deleted"]), "--out", str(out), *extra])


def _works(result: Any, out: Path, *, label: int = DELETED_LABEL) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["labels"]["from_weights"]["labels"] == [label]
    mean = report["evaluation"]["mean"]
    assert all(mean[key] == mean[key] for key in ("psnr", "thumbnail_4x4_psnr", "own_mean_colour_psnr"))
    return report


def test_attention_model_is_inverted(tmp_path: Path) -> None:
    """Gradient inversion differentiates the gradient; the fused attention kernels cannot, the math one can."""
    files = user_files(tmp_path / "vit", VIT)
    _works(audit(files, tmp_path / "out", "--per-class", "0"), tmp_path / "out")


def test_unused_and_shared_parameters(tmp_path: Path) -> None:
    """A parameter forward never uses has a zero gradient (and a zero weight change), not an autograd error."""
    files = user_files(tmp_path / "unused", UNUSED_PARAMETER)
    _works(audit(files, tmp_path / "out", "--per-class", "0"), tmp_path / "out")

HEAD_FIRST = HEADER + '''
class Net(nn.Module):
    """The head is registered first; a hidden Linear as wide as the classes is registered after it."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.head = nn.Linear(num_classes, num_classes)
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.hidden = nn.Linear(256, num_classes)

    def forward(self, x):
        return self.head(torch.sigmoid(self.hidden(torch.flatten(torch.sigmoid(self.conv(x)), 1))))
'''

CONV_HEAD = HEADER + '''
class Net(nn.Module):
    """No Linear layer: a 1×1 convolution to the classes, then global average pooling."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.classes = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.classes(torch.relu(self.body(x))).mean((2, 3))
'''


def test_labels_come_from_the_layer_forward_calls_last(tmp_path: Path) -> None:
    """With two Linear layers as wide as the classes, the labels are read off the one that makes the logits
    (the last called), not the last registered: before, this named a wrong class with no warning."""
    files = user_files(tmp_path / "headfirst", HEAD_FIRST)
    _works(audit(files, tmp_path / "out", "--per-class", "0"), tmp_path / "out")


def test_model_without_linear_head_needs_labels(tmp_path: Path) -> None:
    """Without a Linear output layer the labels cannot be read off ∇*: one error naming --labels; with it, works."""
    files = user_files(tmp_path / "convhead", CONV_HEAD)
    result = audit(files, tmp_path / "out", "--per-class", "0")
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and "no Linear layer with 10 outputs" in result.output
    assert "--labels" in result.output and not (tmp_path / "out").exists()
    given = audit(files, tmp_path / "out", "--per-class", "0", "--labels", str(DELETED_LABEL))
    _works(given, tmp_path / "out")
    # the verdict says the labels were given, not read off the weight change
    assert f"with the given class(es) [{DELETED_LABEL}]" in given.output
    assert "weight change names" not in given.output and "labels read from the weight change" not in given.output

TUPLE_OUT = HEADER + '''
class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x):
        h = torch.flatten(torch.sigmoid(self.conv(x)), 1)
        return self.fc(h), h
'''

DICT_OUT = TUPLE_OUT.replace("return self.fc(h), h", 'return {"logits": self.fc(h), "features": h}')
DOUBLE = TUPLE_OUT.replace("return self.fc(h), h", "return self.fc(h)").replace(
    "self.fc = nn.Linear(256, num_classes)", "self.fc = nn.Linear(256, num_classes)\n        self.double()")


def _refused(result: Any, out: Path) -> str:
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output, result.output
    assert not out.exists()
    return str(result.output)


def test_forward_returning_tuple_or_dict_is_refused_with_the_fix(tmp_path: Path) -> None:
    """The audit needs one logits tensor; the error says to name a subclass returning it, not to change flags."""
    for name, source, pick in (("tuple", TUPLE_OUT, "[0]"), ("dict", DICT_OUT, "['logits']")):
        files = user_files(tmp_path / name, source)
        text = _refused(audit(files, tmp_path / "out", "--per-class", "0"), tmp_path / "out")
        assert f"forward returns a {name}" in text and f"return super().forward(x){pick}" in text
        assert "--input-shape" not in text


def test_float64_model_definition_is_refused_clearly(tmp_path: Path) -> None:
    """A definition built in float64 is named as such (before: 'give the shape it was trained on'); float64
    checkpoints of a float32 definition are read (the weight change taken in float64)."""
    files = user_files(tmp_path / "double", DOUBLE)
    text = _refused(audit(files, tmp_path / "out", "--per-class", "0"), tmp_path / "out")
    assert "builds conv.weight in float64" in text and "build it in float32" in text
    single = user_files(tmp_path / "single", DOUBLE.replace("        self.double()\n", ""))
    state = torch.load(single["before"], weights_only=True)
    torch.save({k: v.double() for k, v in state.items()}, single["before"])
    _works(audit(single, tmp_path / "out", "--per-class", "0"), tmp_path / "out")


def test_whole_pickled_model_is_refused_with_how_to_save_weights(tmp_path: Path) -> None:
    """torch.save(model) is refused unrun; the error names the pickled class and says how to save the weights,
    without torch's advice to load it with weights_only=False (or its terminal escape codes)."""
    files = user_files(tmp_path / "whole", TUPLE_OUT.replace("return self.fc(h), h", "return self.fc(h)"))
    net = _load(files["model"]).Net()
    net.load_state_dict(torch.load(files["before"], weights_only=True))
    torch.save(net, files["before"])
    text = _refused(audit(files, tmp_path / "out", "--per-class", "0"), tmp_path / "out")
    assert "refused without running them" in text and "pickles arch_model.Net" in text
    assert "model.state_dict()" in text and "safetensors" in text
    assert "weights_only" not in text and "\x1b" not in text

TIED = HEADER + '''
class Net(nn.Module):
    """Two Linear layers sharing one weight (dec.weight = enc.weight): two state-dict keys, one parameter."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.inp = nn.Linear(256, 16)
        self.enc = nn.Linear(16, 16)
        self.dec = nn.Linear(16, 16)
        self.dec.weight = self.enc.weight
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        h = torch.sigmoid(self.inp(torch.flatten(torch.sigmoid(self.conv(x)), 1)))
        return self.fc(torch.sigmoid(self.dec(torch.sigmoid(self.enc(h)))))
'''


def test_tied_weights_saved_once_by_safetensors_save_model(tmp_path: Path) -> None:
    """safetensors' save_model keeps one name of a shared weight; the other is the same tensor (before: 'lacks
    net.dec.weight')."""
    from safetensors.torch import load_file, save_model

    files = user_files(tmp_path / "tied", TIED)
    net = _load(files["model"]).Net()
    net.load_state_dict(load_file(str(files["after"])))
    save_model(net, str(files["after"]))
    assert len(load_file(str(files["after"]))) == len(net.state_dict()) - 1
    _works(audit(files, tmp_path / "out", "--per-class", "0"), tmp_path / "out")


def test_frozen_output_layer_needs_labels(tmp_path: Path) -> None:
    """A frozen head carries no weight change to read labels off: one error naming --labels, not a traceback."""
    frozen = TIED.replace("        self.dec.weight = self.enc.weight\n", "").replace(
        "        self.fc = nn.Linear(16, num_classes)\n",
        "        self.fc = nn.Linear(16, num_classes)\n        self.fc.requires_grad_(False)\n")
    files = user_files(tmp_path / "frozen", frozen)
    text = _refused(audit(files, tmp_path / "out", "--per-class", "0"), tmp_path / "out")
    assert "output layer 'net.fc' has no trainable parameters of its own" in text and "--labels" in text
    _works(audit(files, tmp_path / "out", "--per-class", "0", "--labels", str(DELETED_LABEL)), tmp_path / "out")

PROTOTYPES = HEADER + '''
class Net(nn.Module):
    """Logits are minus the distances to learned class prototypes (torch.cdist: no second derivative)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.emb = nn.Linear(256, 8)
        self.prototypes = nn.Parameter(torch.randn(num_classes, 8))

    def forward(self, x):
        return -torch.cdist(self.emb(torch.flatten(torch.sigmoid(self.conv(x)), 1)), self.prototypes)
'''


def test_operation_without_second_derivative_is_one_error(tmp_path: Path) -> None:
    """Gradient matching needs the gradient's derivative; torch.cdist has none: one error naming the operation
    and how to write it (before: a NotImplementedError traceback)."""
    files = user_files(tmp_path / "proto", PROTOTYPES)
    text = _refused(audit(files, tmp_path / "out", "--per-class", "0", "--labels", str(DELETED_LABEL)),
                    tmp_path / "out")
    assert "cannot differentiate (_cdist_backward)" in text and "clamp_min(1e-12).sqrt()" in text
    h = "self.emb(torch.flatten(torch.sigmoid(self.conv(x)), 1))"
    written = PROTOTYPES.replace(f"-torch.cdist({h}, self.prototypes)",
                                 f"-(({h}[:, None] - self.prototypes[None]) ** 2).sum(-1).clamp_min(1e-12).sqrt()")
    assert written != PROTOTYPES
    files = user_files(tmp_path / "written", written)
    _works(audit(files, tmp_path / "out", "--per-class", "0", "--labels", str(DELETED_LABEL)), tmp_path / "out")


def test_single_logit_classifier_is_told_how_to_give_two(tmp_path: Path) -> None:
    """A sigmoid classifier (one output) is told the exact rewrite to two softmax logits, not to check flags."""
    single = TUPLE_OUT.replace("return self.fc(h), h", "return self.fc(h)")
    files = user_files(tmp_path / "two", single, num_classes=2)
    code = files["model"].read_text() + (
        "\n\nclass Sigmoid(Net):\n    def __init__(self, num_classes=2):\n        super().__init__(num_classes=1)\n")
    files["model"].write_text(code)
    args = ["audit", "--model-def", f"{files['model']}:Sigmoid", "--original", str(files["before"]), "--unlearned",
            str(files["after"]), "--input-shape", "3,16,16", "--num-classes", "2", "--out", str(tmp_path / "out"),
            "--per-class", "0", "--iterations", "2"]
    text = _refused(runner.invoke(app, args), tmp_path / "out")
    assert "one output per input" in text and "torch.cat([torch.zeros_like(z), z], 1)" in text


def test_lazy_layers_are_given_their_shapes(tmp_path: Path) -> None:
    """nn.LazyLinear has no shape until a first batch: the audit makes one pass on zeros before loading
    (before: a traceback about uninitialized parameters)."""
    plain = TUPLE_OUT.replace("return self.fc(h), h", "return self.fc(h)")
    files = user_files(tmp_path / "lazy", plain)
    files["model"].write_text(plain.replace("nn.Linear(256, num_classes)", "nn.LazyLinear(num_classes)"))
    _works(audit(files, tmp_path / "out", "--per-class", "0"), tmp_path / "out")


def test_two_classes_run_feature_recovery_and_refuse_the_label_test(tmp_path: Path) -> None:
    """With K = 2 the label test has one other class to weigh the drop against and always said 'no label leak
    shown' (p = 1); it is refused up front with the fix, and the feature recovery runs with --per-class 0."""
    files = user_files(tmp_path / "two", TUPLE_OUT.replace("return self.fc(h), h", "return self.fc(h)"),
                       num_classes=2)
    text = _refused(audit(files, tmp_path / "out", "--per-class", "2", num_classes=2), tmp_path / "out")
    assert "--num-classes 2" in text and "could never detect a leak" in text and "--per-class 0" in text
    _works(audit(files, tmp_path / "out", "--per-class", "0", num_classes=2), tmp_path / "out",
           label=DELETED_LABEL % 2)


BATCH_NORM = HEADER + '''
class Net(nn.Module):
    """Conv, batch norm, ReLU, pooling, Linear head."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))
'''


def test_checkpoints_without_batch_norm_counters_are_read(tmp_path: Path) -> None:
    """Older PyTorch and converted checkpoints have no num_batches_tracked: eval mode never reads it."""
    files = user_files(tmp_path / "bn", BATCH_NORM)
    before = torch.load(files["before"], weights_only=True)
    assert "bn.num_batches_tracked" in before
    torch.save({k: v for k, v in before.items() if not k.endswith("num_batches_tracked")}, files["before"])
    from safetensors.torch import load_file
    after = load_file(str(files["after"]))
    save_file({k: v for k, v in after.items() if not k.endswith("num_batches_tracked")}, str(files["after"]))
    _works(audit(files, tmp_path / "out", "--per-class", "0"), tmp_path / "out")
