"""GPU code paths checked on a CPU machine with CUDA fake tensors.

FakeTensorMode runs every op on shapes, dtypes and devices only (no data, no memory), and it
refuses to mix a CPU tensor with a CUDA one exactly as a GPU run would. So tensors left on the
wrong device, which `meta` tensors and CPU runs never notice, fail here. Only what CUDA itself
would answer (is it there, free memory, bf16 support) is patched.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch
from models import save_tiny_model
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode

import stylenet.stylize
from stylenet.export import Portable
from stylenet.model_file import save_model
from stylenet.stylize import Stylizer
from stylenet.tiling import INDEX_LIMIT, activation_sizes, largest_activation
from stylenet.transformer import TransformerNet


@pytest.fixture
def model_file(tmp_path):
    return save_tiny_model(tmp_path / "model.pt")


class OpLog(TorchDispatchMode):
    """Records the device of every convolution's input and the largest tensor any op makes."""

    def __init__(self):
        super().__init__()
        self.conv_devices: set[str] = set()
        self.conv_inputs: list[tuple[int, ...]] = []
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # inference_mode hands composite ops (conv2d) to the mode undecomposed
        if func.overloadpacket in (torch.ops.aten.conv2d, torch.ops.aten.convolution):
            self.conv_devices.add(args[0].device.type)
            self.conv_inputs.append(tuple(args[0].shape))
        for t in out if isinstance(out, tuple | list) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _load_real(load):
    """Model files are read from disk as real CPU tensors, as they would be on a GPU machine;
    the Stylizer then moves them to the (fake) GPU itself."""

    def wrapped(*args, **kwargs):
        with unset_fake_temporarily():
            return load(*args, **kwargs)

    return wrapped


@contextlib.contextmanager
def fake_cuda(free_bytes: int = 2**40):
    """A machine that reports one CUDA GPU with free_bytes free, running on fake tensors."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch("torch.cuda.is_available", return_value=True))
        stack.enter_context(mock.patch("torch.cuda.is_bf16_supported", return_value=True))
        stack.enter_context(mock.patch("torch.cuda.mem_get_info",
                                       return_value=(free_bytes, 80 * 2**30)))
        stack.enter_context(mock.patch("torch.cuda.empty_cache"))
        # With is_available patched, FakeTensorMode would try to initialise the real driver.
        stack.enter_context(mock.patch.object(FakeTensorMode, "avoid_device_init", True))
        stack.enter_context(mock.patch.object(
            stylenet.stylize, "load_model", _load_real(stylenet.stylize.load_model)))
        stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        ops = stack.enter_context(OpLog())
        yield ops


def test_fake_cuda_catches_a_device_mix_up():
    """The harness itself: a CPU accumulator fed CUDA values fails like on a GPU."""
    with fake_cuda(), pytest.raises(RuntimeError, match="same device"):
        torch.zeros(3) + torch.ones(3, device="cuda")


@pytest.mark.parametrize("settings", [
    {},  # untiled, bf16
    {"precision": "fp16"},
    {"tile": 64, "overlap": 16},  # exact whole-image statistics, tile by tile
    {"tile": 64, "overlap": 16, "stats": "downscaled", "stats_size": 48},
    {"tile": 64, "overlap": 16, "preserve_color": True, "strength": 0.5},
], ids=["untiled", "fp16", "tiled-exact", "tiled-downscaled", "colour-strength"])
def test_stylizer_keeps_every_tensor_on_the_gpu(model_file, settings):
    with fake_cuda() as ops:
        stylizer = Stylizer(model_file, device="cuda", batch_size=2, **settings)
        assert stylizer.device.type == "cuda"
        out = stylizer(torch.rand(2, 3, 150, 133))
    assert isinstance(out, FakeTensor) and out.device.type == "cpu"
    assert out.shape == (2, 3, 150, 133)
    assert ops.conv_devices == {"cuda"}


def test_automatic_tiling_when_the_gpu_is_nearly_full(model_file):
    with fake_cuda(free_bytes=2**20) as ops:  # 1 MiB free: the 1200 px image must be tiled
        out = Stylizer(model_file, device="cuda")(torch.rand(3, 1200, 1100))
    assert out.shape == (3, 1200, 1100)
    assert ops.conv_devices == {"cuda"}
    assert max(h * w for *_, h, w in ops.conv_inputs) < 1200 * 1100


def test_portable_export_module_runs_on_the_gpu(model_file):
    with fake_cuda() as ops:
        net, _ = stylenet.stylize.load_model(model_file)
        out = Portable(net.to("cuda")).eval()(torch.rand(2, 3, 37, 53, device="cuda"))
    assert out.shape == (2, 3, 37, 53) and out.device.type == "cuda"
    assert ops.conv_devices == {"cuda"}


# -- the 2^31 index limit of GPU kernels -------------------------------------------------------

PAPER = {"channels": (32, 64, 128), "num_residual": 5}


def shape_only_sizes(net, h, w, batch=1):
    """Elements of every tensor an untiled forward makes, from a fake-tensor run (no memory)."""
    sizes = []

    class Sizes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            sizes.extend(t.numel() for t in (out if isinstance(out, tuple | list) else [out])
                         if isinstance(t, torch.Tensor))
            return out

    with FakeTensorMode(allow_non_fake_inputs=True), Sizes(), torch.no_grad():
        net(torch.rand(batch, 3, h, w))
    return sizes


def edge(net, h=None, w=None, lo=1000, hi=20000):
    """The largest side (the other side fixed, or square) whose untiled pass stays in the limit."""
    def fits(s):
        return largest_activation(net, h or s, w or s) <= INDEX_LIMIT
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


@pytest.mark.parametrize("arch,h,w", [
    (PAPER, 37, 53), (PAPER, 256, 256), ({"channels": (4, 8, 8), "num_residual": 1}, 61, 75),
    ({"channels": (16, 48, 40), "num_residual": 0}, 30, 41),
])
def test_activation_formula_matches_a_shape_only_run(arch, h, w):
    net = TransformerNet(**arch).eval()
    true = shape_only_sizes(net, h, w)
    formula = activation_sizes(net, h, w)
    assert set(formula.values()) <= set(true)
    assert largest_activation(net, h, w) == max(true)


@pytest.mark.parametrize("h", [None, 3000], ids=["square", "3000-high"])
def test_index_limit_edges_match_the_true_activation_sizes(h):
    net = TransformerNet(**PAPER).eval()
    side = edge(net, h=h)
    # Square: 64 x (5788+2)^2 = 2,145,542,400 fits; 5789 pads to 5792: 64 x 5794^2 passes.
    assert side == {None: 5788, 3000: 11172}[h]
    below, above = (h or side, side), (h or side + 1, side + 1)
    crossing = activation_sizes(net, *above)
    assert max(crossing, key=crossing.get) == "up2.pad"  # the padded 64-channel upsample
    assert max(shape_only_sizes(net, *below)) == largest_activation(net, *below) <= INDEX_LIMIT
    assert max(shape_only_sizes(net, *above)) == largest_activation(net, *above) > INDEX_LIMIT


@pytest.fixture
def paper_model(tmp_path):
    net = TransformerNet(**PAPER)
    return save_model(tmp_path / "paper.pt", net, {"arch": net.config()})


@pytest.mark.slow
def test_automatic_tiling_at_the_index_limit_whatever_the_free_memory(paper_model):
    # 1 TiB free: memory never asks for tiles, the index limit alone decides.
    with fake_cuda() as ops:
        out = Stylizer(paper_model, device="cuda")(torch.rand(3, 5788, 5788))
    assert out.shape == (3, 5788, 5788)
    assert ops.conv_inputs[0][-2:] == (5788 + 8, 5788 + 8)  # untiled: the whole padded image
    assert ops.largest == 64 * 5790 * 5790 <= INDEX_LIMIT
    with fake_cuda() as ops:  # downscaled statistics: the same choice, 36 passes fewer
        out = Stylizer(paper_model, device="cuda", stats="downscaled")(torch.rand(3, 5789, 5789))
    assert out.shape == (3, 5789, 5789)
    assert max(max(s[-2:]) for s in ops.conv_inputs) < 5789  # tiled
    assert ops.largest <= INDEX_LIMIT and ops.conv_devices == {"cuda"}


def test_a_batch_over_the_index_limit_is_split_not_tiled(paper_model):
    # One 4200 px image fits (64 x 4202^2 = 1.13e9 elements), two at once do not.
    with fake_cuda() as ops:
        out = Stylizer(paper_model, device="cuda")(torch.rand(2, 3, 4200, 4200))
    assert out.shape == (2, 3, 4200, 4200)
    assert {s[0] for s in ops.conv_inputs} == {1}  # one image per pass
    assert max(s[-1] for s in ops.conv_inputs) == 4200 + 8  # untiled
    assert ops.largest <= INDEX_LIMIT


def test_a_tile_or_stats_size_over_the_index_limit_is_refused(paper_model):
    with fake_cuda(), pytest.raises(ValueError, match="tile=6000: .* smaller tile"):
        Stylizer(paper_model, device="cuda", tile=6000)(torch.rand(3, 6400, 6403))
    with pytest.raises(ValueError, match="stats_size=6000: .* smaller stats_size"):
        Stylizer(paper_model, device="cpu", stats="downscaled", stats_size=6000)
    Stylizer(paper_model, device="cpu", stats="downscaled", stats_size=5788)


def test_compile_auto_waits_for_enough_pixels_on_the_gpu(model_file, monkeypatch):
    monkeypatch.setattr(stylenet.stylize, "COMPILE_AFTER_PIXELS", 2 * 40 * 40)
    with fake_cuda() as ops:
        stylizer = Stylizer(model_file, device="cuda")
        assert stylizer.channels_last  # the default on CUDA
        compiled = []
        for _ in range(3):
            stylizer(torch.rand(3, 40, 40))
            compiled.append(stylizer._compiled is not None)
    # compiled for the third image: the first two reach the threshold
    assert compiled == [False, False, True]
    assert ops.conv_devices == {"cuda"}
