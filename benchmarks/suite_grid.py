"""A picture grid of the suite's reconstructions: one row per (case, setting, sample), one column per method.

Reads the images ``suite.py --save-images DIR`` kept (``DIR/<case>/<setting>/<sample>.safetensors``) and writes
one PNG. Columns (a missing one is left blank, labelled "not run"): truth, own mean colour, 4×4 thumbnail,
breaching ``modern``, ours (the default), then any ``--column KEY=TITLE`` (repeatable; KEY is a method's name in
the saved file, e.g. ``--column paper=paper``, or the learned prior's ``--column "learned=learned prior"`` and
``--column "decoder=decoder alone"``, kept by ``decoder_prior.py --save-images DIR``).

    python benchmarks/suite_grid.py benchmarks/results/suite_v2_images --out docs/images/suite_v2_grid.png \
        --cell bn-gelu-tanh/approx-k1-N32/0 --cell vgg-bn/approx-k1-N32/0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from safetensors.torch import load_file

from unlearnleak.metrics import psnr

COLUMNS = (("truth", "truth"), ("own_mean_colour", "own mean colour"), ("thumbnail_4x4", "4×4 thumbnail"),
           ("breaching_modern", "breaching modern"), ("default", "ours (default)"))


def column(text: str) -> tuple[str, str]:
    """``KEY=TITLE`` (or ``KEY``, titled by itself) as an extra column."""
    key, _, title = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=TITLE, got {text!r}")
    return key, title or key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cell", action="append", required=True, help="CASE/SETTING/SAMPLE (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--column", type=column, action="append", default=[],
                        help="KEY=TITLE: one more column, the saved image under KEY (repeatable)")
    args = parser.parse_args()
    columns = (*COLUMNS, *args.column)
    rows = []
    for cell in args.cell:
        path = args.folder / f"{cell}.safetensors"
        if not path.is_file():
            print(f"error: no saved images for {cell} ({path}); run suite.py with --save-images", file=sys.stderr)
            return 2
        rows.append((cell, load_file(str(path))))
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.6 * len(columns), 1.75 * len(rows)),
                             squeeze=False)
    for i, (cell, images) in enumerate(rows):
        truth = images["truth"][:1]
        for j, (key, title) in enumerate(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
            if j == 0:
                ax.set_ylabel(cell.replace("/", "\n"), fontsize=6)
            if key not in images:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=7, transform=ax.transAxes)
                continue
            x = images[key][:1].float().clamp(0, 1)
            ax.imshow(x[0].permute(1, 2, 0).numpy(), interpolation="nearest")
            if key != "truth":
                ax.set_xlabel(f"{float(psnr(x, truth)[0]):.1f} dB", fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=150)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
