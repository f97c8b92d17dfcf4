"""Parameters and FLOPs of the network and of each attention site.

    python -m nets.summary --phi 3 [--img 416] [--classes 80]

FLOPs are counted by torch.utils.flop_counter (2 x multiply-accumulates of convs and matmuls;
element-wise ops such as sigmoid or BN in eval mode are not counted, as is the convention).
"""
from __future__ import annotations

import argparse
import json

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nets.attention import PHI_NAMES
from nets.yolo import YoloBody


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(model: nn.Module, img_size: int | tuple[int, int] = 416) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one forward pass at batch 1, and FLOPs per top-level-qualified module name."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, 3, h, w, device=device))
    per_module = {name.removeprefix("Global.").removeprefix("YoloBody."): sum(v.values())
                  for name, v in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


def summarize(model: YoloBody, img_size: int | tuple[int, int] = 416) -> dict:
    total_flops, per_module = count_flops(model, img_size)
    sites = {}
    for site, block in model.attention_blocks().items():
        sites[site] = {
            "block": type(block).__name__,
            "params": count_parameters(block),
            "gflops": per_module.get(f"{site}_att", 0) / 1e9,
        }
    return {
        "phi": model.phi,
        "num_classes": model.num_classes,
        "img_size": img_size,
        "params": count_parameters(model),
        "gflops": total_flops / 1e9,
        "attention_sites": sites,
    }


def format_summary(s: dict) -> str:
    lines = [
        f"YoloBody  phi={s['phi']}  classes={s['num_classes']}  input={s['img_size']}",
        f"  parameters: {s['params']:,}",
        f"  GFLOPs:     {s['gflops']:.2f}  (2 x MACs, torch.utils.flop_counter)",
    ]
    if s["attention_sites"]:
        lines.append(f"  {'site':<10}{'block':<10}{'params':>12}{'MFLOPs':>10}")  # blocks are ~1e-4 of the net
        for site, v in s["attention_sites"].items():
            lines.append(f"  {site:<10}{v['block']:<10}{v['params']:>12,}{v['gflops'] * 1e3:>10.2f}")
    else:
        lines.append("  attention: none")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phi", default="0", help=f"attention: 0..{len(PHI_NAMES) - 1} ({', '.join(PHI_NAMES)}) or a name (cse, sse)")
    p.add_argument("--img", type=int, default=416, help="square input size (multiple of 32)")
    p.add_argument("--classes", type=int, default=80, help="number of classes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    try:
        model = YoloBody(a.classes, a.phi)
        s = summarize(model, a.img)
    except ValueError as e:
        p.error(str(e))
    print(json.dumps(s, indent=2) if a.json else format_summary(s))


if __name__ == "__main__":
    main()
