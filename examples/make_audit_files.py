"""Stand-in for your own files, for the README's audit example: ``python examples/make_audit_files.py OUT [DATA]``.

A model trained as a training script would, with plain PyTorch: `Net` (examples/my_model.py) fitted with Adam to
4,000 CIFAR-10 training photos (from DATA, default ./data: `unlearnleak data download cifar10 --data-dir data`),
then one of them "unlearned" by a gradient-ascent step. Writes into OUT:

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

ROWS = slice(4000, 8000)  # the photos θ is trained on
EPOCHS, BATCH = 4, 32


def main(out: Path, data_dir: str) -> None:
    """Train θ, unlearn the first training photo, write the three files into ``out``."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    photos = load_dataset("cifar10", "train", data_dir)  # official CIFAR-10 pickles, pixels in [0, 1]
    x, y = photos.x[ROWS], photos.y[ROWS]
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        perm = torch.randperm(len(y), generator=order)
        for start in range(0, len(y), BATCH):
            batch = perm[start:start + BATCH]
            optimizer.zero_grad()
            F.cross_entropy(net(x[batch]), y[batch]).backward()
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
    print(f"wrote {out}/before.pt, {out}/after.safetensors and {out}/deleted.safetensors (θ trained on "
          f"{len(y)} photos; deleted: one {photos.classes[int(y[0])]} photo)")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python examples/make_audit_files.py OUT_FOLDER [DATA_FOLDER (default: data)]")
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) == 3 else "data")
