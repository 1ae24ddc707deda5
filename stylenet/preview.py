"""What a training run shows of itself: preview grids in TensorBoard, the sample image beside the
model file, and the high-frequency ratio that flags checkerboard and stripe artifacts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from stylenet.image import image_grid


def high_frequency_energy(images: torch.Tensor) -> torch.Tensor:
    """Mean squared response of a 3x3 Laplacian on the luminance: checkerboard and stripe
    artifacts raise it. images: (B, 3, H, W) in 0..1 -> (B,)."""
    luma = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    gray = (images.float() * luma).sum(1, keepdim=True)
    kernel = images.new_tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).float()
    return F.conv2d(gray, kernel).pow(2).mean(dim=(1, 2, 3))


@torch.no_grad()
def stylize(module, images: torch.Tensor, style: int | None = None) -> torch.Tensor:
    """uint8 or float images -> stylized float images in 0..1, in eval mode, eagerly (the
    previews' size and eval mode would otherwise recompile the training graph). style: the
    net's row, for a net of several paintings."""
    net = module.net
    was_training = net.training
    net.eval()
    x = images.to(module.device)
    x = module._to_input(x) if x.dtype == torch.uint8 else x
    out = net.forward(x, style=style).float().clamp(0, 1)
    net.train(was_training)
    return out


def log_styles(module, images: list[torch.Tensor]) -> None:
    """The paintings in TensorBoard, once per run."""
    tb = module._tensorboard()
    names = [p["name"] for p in module.paintings] if module.paintings else [None]
    for name, image in zip(names, images, strict=True) if tb is not None else ():
        tb.add_image("style" if name is None else f"style/{name}", image[0], 0)


def styles(module) -> list[int | None]:
    """The net's rows of the module's trained paintings (None: a net of one painting)."""
    if not module.paintings:
        return [None]
    return [module.offset + k for k in range(len(module.paintings))]


def log_preview(module, step: int) -> None:
    """The preview photos of a StyleTransferModule above their stylized versions (a row per
    painting) in TensorBoard, and their high-frequency ratio."""
    tb = module._tensorboard()
    if tb is None:
        return
    photos = module.preview.to(module.device).float() / 255
    rows = styles(module)
    out = torch.cat([stylize(module, module.preview, k) for k in rows])  # a row each
    tb.add_image("preview", image_grid([*photos, *out], nrow=len(photos), padding=2,
                                       pad_value=0.0), step)
    ref = high_frequency_energy(photos).clamp_min(1e-8).repeat(len(rows))
    ratio = (high_frequency_energy(out) / ref).mean()
    module.log("preview/high_freq_ratio", ratio, on_step=True, batch_size=len(photos))


def sample_grid(module) -> torch.Tensor:
    """A StyleTransferModule's sample as one image: the preview photos on top, stylized below (a
    row per painting), the style image on the left."""
    photos = module.preview.float() / 255
    size = photos.shape[-1]
    cells = [torch.ones(3, size, size), *photos]
    images = module.style_image if module.paintings else [module.style_image]
    for k, image in zip(styles(module), images, strict=True):
        style = TF.center_crop(TF.resize(image[0], size, antialias=True), size)
        cells += [style, *stylize(module, module.preview, k).cpu()]
    return image_grid(cells, nrow=len(photos) + 1, padding=4, pad_value=1.0)
