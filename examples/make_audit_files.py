"""Stand-in for your own files, for the README's audit example: ``python examples/make_audit_files.py OUT``.

A model trained as many training scripts do it, with plain PyTorch: `Net` (examples/my_model.py) fitted to 8
real CIFAR-10 photos (the 20 test photos that install with the dependencies: no download), then one photo
"unlearned" by a gradient-ascent step on it. Writes into OUT:

- ``before.pt``: θ as a torch state dict (what ``torch.save(net.state_dict(), …)`` gives);
- ``after.safetensors``: θ_u;
- ``deleted.safetensors``: the unlearned photo (``images``, in [0, 1]) and its label (``labels``), which only
  the evaluation reads, to score what the audit recovers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from my_model import Net

from unlearnleak.data import load_dataset


def main(out: Path) -> None:
    """Train θ on 8 photos, unlearn photo 0, write the three files into ``out``."""
    torch.manual_seed(0)
    photos = load_dataset("embedded_cifar10", "test")  # real CIFAR-10 test photos, pixels in [0, 1]
    x, y = photos.x[:8], photos.y[:8]
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):  # full-batch steps: θ fits the 8 photos
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "before.pt")
    deleted = slice(0, 1)
    step = torch.optim.SGD(net.parameters(), lr=1e-3)  # unlearning: one ascent step on the deleted photo
    step.zero_grad()
    (-F.cross_entropy(net(x[deleted]), y[deleted])).backward()
    step.step()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "after.safetensors"))
    save_file({"images": x[deleted].contiguous(), "labels": y[deleted].contiguous()},
              str(out / "deleted.safetensors"))
    print(f"wrote {out}/before.pt, {out}/after.safetensors and {out}/deleted.safetensors "
          f"(deleted: one {photos.classes[int(y[0])]} photo)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/make_audit_files.py OUT_FOLDER")
    main(Path(sys.argv[1]))
