"""The plain reference loop that stylenet's training is measured against.

The well-known recipe (pytorch/examples fast_neural_style, Johnson et al. 2016) written out in
plain PyTorch. It imports nothing from stylenet, so a bug shared with stylenet cannot cancel out:
its own transformer (pixels in 0..255), its own VGG16 reader and taps, Gram / (C*H*W), Adam 1e-3,
batch 4. Losses are on the loss network's own feature scale (Caffe weights: BGR 0..255 minus the
mean pixel), with the Lua original's balance: content 1 at relu2_2, style 5 summed over
relu1_2, relu2_2, relu3_3, relu4_3.

train_reference() takes pre-cut crops (the quality comparison hands both sides the same pixels);
train_reference_folder() reads a folder of photos as the example does, decoding in the loop (the
speed baseline of benchmarks/bench.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu2_2"
VGG16_CONVS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512))  # blocks 1-4
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # what stylenet's data=folder reads too


# -- the transformer of pytorch/examples, with its widths as arguments --------------------------
class ConvLayer(nn.Module):
    def __init__(self, c_in, c_out, kernel_size, stride=1):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(c_in, c_out, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x):
        return x + self.in2(self.conv2(F.relu(self.in1(self.conv1(x)))))


class UpsampleConvLayer(nn.Module):
    def __init__(self, c_in, c_out, kernel_size):
        super().__init__()
        self.conv = ConvLayer(c_in, c_out, kernel_size)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ReferenceNet(nn.Module):
    def __init__(self, channels=(32, 64, 128), num_residual=5):
        super().__init__()
        c1, c2, c3 = channels
        self.conv1, self.in1 = ConvLayer(3, c1, 9), nn.InstanceNorm2d(c1, affine=True)
        self.conv2, self.in2 = ConvLayer(c1, c2, 3, 2), nn.InstanceNorm2d(c2, affine=True)
        self.conv3, self.in3 = ConvLayer(c2, c3, 3, 2), nn.InstanceNorm2d(c3, affine=True)
        self.res = nn.Sequential(*[ResidualBlock(c3) for _ in range(num_residual)])
        self.deconv1, self.in4 = UpsampleConvLayer(c3, c2, 3), nn.InstanceNorm2d(c2, affine=True)
        self.deconv2, self.in5 = UpsampleConvLayer(c2, c1, 3), nn.InstanceNorm2d(c1, affine=True)
        self.deconv3 = ConvLayer(c1, 3, 9)

    def forward(self, x):  # pixels in, pixels out, same range; no output activation
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        y = F.relu(self.in3(self.conv3(y)))
        y = self.res(y)
        y = F.relu(self.in4(self.deconv1(y)))
        y = F.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


def load_by_order(net: nn.Module, tensors: list[torch.Tensor]) -> None:
    """Start from given weights (another implementation's, listed in layer order)."""
    own = net.state_dict()
    if len(own) != len(tensors):
        raise ValueError(f"{len(tensors)} tensors for {len(own)} parameters")
    for (name, mine), theirs in zip(own.items(), tensors, strict=True):
        if mine.shape != theirs.shape:
            raise ValueError(f"{name}: {tuple(theirs.shape)} does not fit {tuple(mine.shape)}")
    net.load_state_dict(dict(zip(own, tensors, strict=True)))


# -- VGG16 up to relu4_3 ------------------------------------------------------------------------
def read_vgg16_convs(path: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ten convolutions of blocks 1-4, (weight (out, in, 3, 3), bias), from a Keras .h5
    (groups named block1_conv1 ...) or a torchvision-layout state_dict (.pth)."""
    if str(path).endswith(".h5"):
        import h5py

        found = {}

        def visit(name, obj):
            label = obj.attrs.get("name", "") if isinstance(obj, h5py.Group) else ""
            label = label.decode() if isinstance(label, bytes) else str(label)
            m = re.fullmatch(r"block(\d)_conv(\d)", label)
            if m and "0" in obj and "1" in obj:  # Keras 3 layout: 0 = kernel, 1 = bias
                kernel = torch.from_numpy(obj["0"][()]).permute(3, 2, 0, 1)  # (kh,kw,in,out)
                found[int(m[1]), int(m[2])] = (kernel.contiguous(), torch.from_numpy(obj["1"][()]))

        with h5py.File(path, "r") as f:
            f.visititems(visit)
        return [found[b + 1, c + 1] for b, convs in enumerate(VGG16_CONVS)
                for c in range(len(convs))]
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("features."): v for k, v in state.get("state_dict", state).items()}
    indices = sorted({int(k.split(".")[0]) for k in state if k.endswith(".weight")})[:10]
    return [(state[f"{i}.weight"].float(), state[f"{i}.bias"].float()) for i in indices]


class Vgg16(nn.Module):
    def __init__(self, path: str, convention: str = "caffe"):
        super().__init__()
        convs = iter(read_vgg16_convs(path))
        self.slices = nn.ModuleList()
        c_in = 3
        for b, widths in enumerate(VGG16_CONVS):
            layers = [nn.MaxPool2d(2, 2)] if b else []
            for c_out in widths:
                conv = nn.Conv2d(c_in, c_out, 3, padding=1)
                conv.weight.data, conv.bias.data = next(convs)
                layers += [conv, nn.ReLU()]
                c_in = c_out
            self.slices.append(nn.Sequential(*layers))
        self.requires_grad_(False).eval()
        self.convention = convention

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixels: RGB in 0..255 -> {relu1_2, relu2_2, relu3_3, relu4_3}."""
        if self.convention == "caffe":
            x = pixels.flip(1) - pixels.new_tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
        else:
            mean = pixels.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            x = (pixels / 255 - mean) / pixels.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        out = {}
        for name, block in zip(STYLE_LAYERS, self.slices, strict=True):
            x = block(x)
            out[name] = x
        return out


def gram(y: torch.Tensor) -> torch.Tensor:
    b, c, h, w = y.shape
    f = y.reshape(b, c, h * w)
    return f.bmm(f.transpose(1, 2)) / (c * h * w)


# -- the loop ------------------------------------------------------------------------------------
def train_reference(
    crops: torch.Tensor,
    style: torch.Tensor,
    vgg_path: str,
    steps: int,
    init: list[torch.Tensor] | None = None,
    batch_size: int = 4,
    lr: float = 1e-3,
    content_weight: float = 1.0,
    style_weight: float = 5.0,
    pixel_scale: float = 255.0,
    channels=(32, 64, 128),
    num_residual: int = 5,
    convention: str = "caffe",
    device: str = "cpu",
) -> tuple[ReferenceNet, float]:
    """crops: (N, 3, S, S) uint8, used in order, batch_size at a time; style: (3, H, W) uint8.
    pixel_scale: the range the transformer reads and writes (255 as in the reference; 1 is the
    negative control). Returns the trained net (in eval mode) and the wall time in seconds."""
    start = time.perf_counter()
    batches = (crops[step * batch_size : (step + 1) * batch_size] for step in range(steps))
    net = fit(batches, style, vgg_path, steps, init=init, lr=lr, content_weight=content_weight,
              style_weight=style_weight, pixel_scale=pixel_scale, channels=channels,
              num_residual=num_residual, convention=convention, device=device)
    return net, time.perf_counter() - start


class PhotoFiles(Dataset):
    """Every photo under `root` (recursively, sorted), read as torchvision's ImageFolder reads
    it (PIL, converted to RGB) and passed through `transform`. ImageFolder itself wants one
    subfolder per class, which a plain folder of photos does not have."""

    def __init__(self, root: str | Path, transform):
        self.paths = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
        if not self.paths:
            raise FileNotFoundError(f"no photos under {root}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with open(self.paths[index], "rb") as f:
            return self.transform(Image.open(f).convert("RGB"))


def train_reference_folder(root: str | Path, style: torch.Tensor, vgg_path: str, steps: int,
                           image_size: int = 256, batch_size: int = 4, channels=(32, 64, 128),
                           num_residual: int = 5, device: str = "cpu",
                           on_step: Callable[[int, torch.Tensor], None] | None = None,
                           ) -> tuple[ReferenceNet, float]:
    """The recipe as pytorch/examples runs it on a folder of photos: Resize + CenterCrop +
    ToTensor (x 255), a DataLoader of batch_size with no workers and no shuffling, so decoding
    runs in the training loop, for `steps` steps (epochs repeat as needed). on_step(step, loss)
    is called after each optimizer step (step counts from 1). Returns the trained net and the
    wall time in seconds."""
    from torchvision import transforms

    start = time.perf_counter()
    transform = transforms.Compose([
        transforms.Resize(image_size),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Lambda(lambda x: x.mul(255)),
    ])
    loader = DataLoader(PhotoFiles(root, transform), batch_size=batch_size)

    def batches():
        while True:
            yield from loader

    net = fit(batches(), style, vgg_path, steps, channels=channels, num_residual=num_residual,
              device=device, on_step=on_step)
    return net, time.perf_counter() - start


def fit(
    batches: Iterable[torch.Tensor],
    style: torch.Tensor,
    vgg_path: str,
    steps: int,
    init: list[torch.Tensor] | None = None,
    lr: float = 1e-3,
    content_weight: float = 1.0,
    style_weight: float = 5.0,
    pixel_scale: float = 255.0,
    channels=(32, 64, 128),
    num_residual: int = 5,
    convention: str = "caffe",
    device: str = "cpu",
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> ReferenceNet:
    """The training loop itself: `steps` batches of photos (B, 3, S, S) in 0..255 from
    `batches`; style (3, H, W) uint8. Returns the trained net in eval mode."""
    net = ReferenceNet(channels, num_residual)
    if init is not None:
        load_by_order(net, init)
    net.to(device).train()
    vgg = Vgg16(vgg_path, convention).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr)
    with torch.no_grad():
        style_grams = {k: gram(v) for k, v in vgg(style[None].to(device).float()).items()}
    for step, photos in zip(range(steps), batches, strict=False):  # batches may be endless
        x = photos.to(device).float()  # 0..255
        optimizer.zero_grad()
        y = net(x * (pixel_scale / 255)) * (255 / pixel_scale)  # back to 0..255 for the VGG
        features_y = vgg(y)
        with torch.no_grad():
            features_x = vgg(x)
        content = F.mse_loss(features_y[CONTENT_LAYER], features_x[CONTENT_LAYER])
        style_loss = sum(F.mse_loss(gram(features_y[k]), style_grams[k].expand(len(x), -1, -1))
                         for k in STYLE_LAYERS)
        total = content_weight * content + style_weight * style_loss
        total.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step + 1, total.detach())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    net.pixel_scale = pixel_scale
    return net.eval()


@torch.no_grad()
def stylize(net: ReferenceNet, images: torch.Tensor) -> torch.Tensor:
    """images (B, 3, H, W) in 0..1 -> stylized, clamped to 0..1."""
    scale = net.pixel_scale
    return (net(images * scale) / scale).clamp(0, 1)
