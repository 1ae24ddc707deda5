import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from models import save_tiny_model
from PIL import Image

import stylenet.stylize
from stylenet.color import rgb_to_ycbcr
from stylenet.image import load_tensor, read_photo
from stylenet.stylize import Stylizer
from stylenet.tiling import feather, tile_starts


@pytest.fixture
def model_file(tmp_path):
    return save_tiny_model(tmp_path / "model.pt")


def smooth_image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g)
    return torch.nn.functional.avg_pool2d(x, 5, 1, 2)[0] * 0.6 + 0.2  # (3, H, W), photo-like


def psnr(a, b):
    return 10 * torch.log10(1 / ((a - b) ** 2).mean()).item()


@pytest.mark.parametrize("size,tile,overlap", [(160, 48, 16), (203, 96, 48), (64, 64, 0)])
def test_tiles_cover_the_image_on_the_stride_grid(size, tile, overlap):
    tiles = tile_starts(size, tile, overlap)
    assert tiles[0][0] == 0 and tiles[-1][0] + tiles[-1][1] == size
    assert all(s % 4 == 0 for s, _ in tiles)
    for (s0, n0), (s1, _) in zip(tiles, tiles[1:], strict=False):
        assert s0 + n0 - s1 >= overlap  # neighbours share at least the overlap
    w = sum(torch.zeros(size).index_add_(0, torch.arange(s, s + n), feather(n, overlap, s > 0,
            s + n < size)) for s, n in tiles)
    assert (w > 0).all()


def test_tiled_output_matches_untiled(model_file):
    x = smooth_image(128, 138)
    untiled = Stylizer(model_file, device="cpu")(x)
    stylizer = Stylizer(model_file, device="cpu", tile=96, overlap=48)
    assert len(tile_starts(128, 96, 48)) * len(tile_starts(138, 96, 48)) == 4
    tiled = stylizer(x)
    assert tiled.shape == x.shape
    assert psnr(tiled, untiled) >= 40


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_out_of_memory_falls_back_to_tiles_and_says_so(model_file, caplog, backend):
    x = smooth_image(160, 160)
    untiled = Stylizer(model_file, device="cpu", backend="torch")(x)
    # stats exact: memory-bounded
    stylizer = Stylizer(model_file, device="cpu", overlap=48, backend=backend)
    sizes = []
    if backend == "torch":
        forward = stylizer.net.forward

        def limited(t, stats=(), upto=None):  # a device that only holds 128x128
            sizes.append(t.shape[-2] * t.shape[-1])
            if sizes[-1] > 128 * 128:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return forward(t, stats, upto)

        stylizer.net.forward = limited
    else:  # the untiled pass runs in ONNX Runtime, which raises its own error type
        from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

        stylizer(smooth_image(16, 16))  # makes the session

        class Limited:
            def run(self, names, feeds):
                sizes.append(feeds["image"].shape[-2] * feeds["image"].shape[-1])
                raise RuntimeException("Failed to allocate memory for requested buffer")

        stylizer._session = Limited()
    with caplog.at_level(logging.WARNING):
        out = stylizer(x)
    assert "out of memory" in caplog.text and "tiling" in caplog.text
    assert psnr(out, untiled) >= 40
    assert sizes[0] == 160 * 160 and (backend == "onnx" or max(sizes[1:]) <= 128 * 128)


def test_the_cpu_runs_the_net_in_onnx_runtime_with_the_same_output(model_file, monkeypatch,
                                                                    tmp_path):
    from stylenet.export import cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    x = torch.stack([smooth_image(37, 53, seed=i) for i in range(2)])
    torch_out = Stylizer(model_file, device="cpu", backend="torch")(x)
    fast = Stylizer(model_file, device="cpu")  # the default on the CPU
    assert fast.backend == "onnx"
    assert (fast(x) - torch_out).abs().max() < 1e-5
    # The export is cached: a second Stylizer reads it, a damaged file is exported again.
    cached = list(cache_dir().glob("*.onnx"))
    assert len(cached) == 1
    cached[0].write_bytes(b"not onnx")
    again = Stylizer(model_file, device="cpu")
    assert (again(x) - torch_out).abs().max() < 1e-5
    assert cached[0].read_bytes() != b"not onnx"
    # PyTorch where ONNX Runtime cannot do what was asked, or is not installed.
    assert Stylizer(model_file, device="cpu", precision="bf16").backend == "torch"
    assert Stylizer(model_file, device="cpu", compile=True).backend == "torch"
    assert Stylizer(model_file, device="cpu", channels_last=True).backend == "torch"
    with pytest.raises(ValueError, match="backend=onnx runs fp32 on the CPU"):
        Stylizer(model_file, device="cpu", precision="bf16", backend="onnx")
    monkeypatch.setattr(stylenet.stylize, "has_onnxruntime", lambda: False)
    assert Stylizer(model_file, device="cpu").backend == "torch"
    with pytest.raises(ValueError, match=r"pip install 'stylenet\[onnx\]'"):
        Stylizer(model_file, device="cpu", backend="onnx")


def test_preserve_color_keeps_the_photos_chroma(model_file):
    x = smooth_image(48, 64)
    plain = Stylizer(model_file, device="cpu")(x)
    kept = Stylizer(model_file, device="cpu", preserve_color=True)(x)
    chroma = lambda t: rgb_to_ycbcr(t)[1:]  # noqa: E731
    assert (chroma(plain) - chroma(x)).abs().mean() > 0.02  # the style did change the colours
    assert (chroma(kept) - chroma(x)).abs().mean() < 0.01
    assert torch.allclose(rgb_to_ycbcr(kept)[0], rgb_to_ycbcr(plain)[0], atol=0.05)


def test_strength_zero_returns_the_input_and_half_is_between(model_file, photo, tmp_path):
    out = Stylizer(model_file, device="cpu", strength=0.0).stylize_file(photo, tmp_path / "o.png")
    assert torch.equal(load_tensor(out), load_tensor(photo))
    x = load_tensor(photo)
    full = Stylizer(model_file, device="cpu")(x)
    half = Stylizer(model_file, device="cpu", strength=0.5)(x)
    assert torch.allclose(half, (x + full) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="strength"):
        Stylizer(model_file, device="cpu", strength=2)


def test_alpha_is_kept_and_exif_orientation_respected(model_file, tmp_path):
    rgba = Image.new("RGBA", (40, 30), (200, 50, 50, 255))
    rgba.putalpha(Image.linear_gradient("L").resize((40, 30)))
    rgba.save(tmp_path / "a.png")
    out = Stylizer(model_file, device="cpu").stylize_file(tmp_path / "a.png", tmp_path / "o.png")
    with Image.open(out) as img:
        assert img.mode == "RGBA"
        assert img.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (40, 30), (10, 120, 200)).save(tmp_path / "r.jpg", exif=exif.tobytes())
    out = Stylizer(model_file, device="cpu").stylize_file(tmp_path / "r.jpg", tmp_path / "r_o.jpg")
    with Image.open(out) as img:
        assert img.size == (30, 40) and img.getexif().get(0x0112, 1) == 1


def test_16_bit_and_greyscale_inputs(model_file, tmp_path):
    import numpy as np

    ramp = (np.linspace(0, 65535, 24 * 32).reshape(24, 32)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    photo = read_photo(tmp_path / "g16.png")
    assert photo.rgb.shape == (3, 24, 32)
    assert torch.allclose(photo.rgb[1], torch.from_numpy(ramp / 65535.0).float(), atol=1 / 255)
    s = Stylizer(model_file, device="cpu")
    Image.fromarray((ramp >> 8).astype(np.uint8)).save(tmp_path / "g8.png")
    for name in ("g16.png", "g8.png"):
        out = s.stylize_file(tmp_path / name, tmp_path / f"o_{name}")
        assert load_tensor(out).shape == (3, 24, 32)


def test_max_size_and_quality(model_file, tmp_path):
    img = smooth_image(60, 90)
    Image.fromarray((img.permute(1, 2, 0) * 255).byte().numpy()).save(tmp_path / "p.png")
    s = Stylizer(model_file, device="cpu", max_size=45)
    assert load_tensor(s.stylize_file(tmp_path / "p.png", tmp_path / "o.png")).shape == (3, 30, 45)
    s = Stylizer(model_file, device="cpu")
    small = s.stylize_file(tmp_path / "p.png", tmp_path / "q10.jpg", quality=10)
    big = s.stylize_file(tmp_path / "p.png", tmp_path / "q95.webp", quality=95)
    assert small.stat().st_size < big.stat().st_size


def test_channels_last_gives_the_same_output(model_file):
    x = smooth_image(45, 62)
    plain = Stylizer(model_file, device="cpu")(x)
    nhwc = Stylizer(model_file, device="cpu", channels_last=True)
    assert nhwc.net.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(nhwc(x), plain, atol=1e-5)


def test_compile_gives_the_same_output(model_file):
    graphs = []

    def recording_backend(gm, example_inputs):  # runs the captured graph as it is
        graphs.append(gm)
        return gm.forward

    x = smooth_image(45, 62)
    plain = Stylizer(model_file, device="cpu")(x)
    compiled = Stylizer(model_file, device="cpu", compile=True, compile_backend=recording_backend)
    assert torch.allclose(compiled(x), plain, atol=1e-5)
    assert graphs  # the compiled module did run
    with pytest.raises(ValueError, match="compile='yes': use auto, true or false"):
        Stylizer(model_file, device="cpu", compile="yes")


def test_compile_auto_stays_off_on_the_cpu(model_file, monkeypatch):
    monkeypatch.setattr(stylenet.stylize, "COMPILE_AFTER_PIXELS", 1)
    stylizer = Stylizer(model_file, device="cpu")
    for _ in range(2):
        stylizer(smooth_image(20, 20))
    assert stylizer._compiled is None


PEAK_SCRIPT = """
import sys, threading, time, torch
from models import save_tiny_model
from stylenet.stylize import Stylizer
channels, kernel, side = eval(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
model = save_tiny_model(sys.argv[5], channels=channels, num_residual=5, edge_kernel=kernel)
stylizer = Stylizer(model, device="cpu", backend=sys.argv[4])
stylizer(torch.rand(3, 32, 32))  # loads the net, exports and opens the ONNX Runtime session
torch.manual_seed(0)
x = torch.nn.functional.avg_pool2d(torch.rand(1, 3, side, side), 5, 1, 2)[0]

def anon():  # anonymous resident bytes: not the shared libraries' pages, which come and go
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("RssAnon:"))

now, peak, done = anon(), [0], threading.Event()

def watch():
    while not done.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)

watcher = threading.Thread(target=watch)
watcher.start()
stylizer(x)
done.set()
watcher.join()
print(peak[0] - now, stylizer.untiled_bytes(side, side))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("channels,kernel", [((32, 64, 128), 9), ((4, 8, 32), 5)],
                         ids=["paper", "lite"])
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_the_cpu_memory_estimate_covers_an_untiled_pass(channels, kernel, backend, tmp_path):
    """Stylizer tiles a photo on the CPU when its untiled_bytes estimate would not fit: the
    real peak of an untiled pass, in a fresh process, must stay under that
    estimate and be at least a third of it (an estimate far above it would tile needlessly)."""
    side = 768 if channels[0] == 32 else 1536
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": f"{tests}:{tests.parent}",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}  # the ONNX export's cache
    args = [repr(channels), str(kernel), str(side), backend, str(tmp_path / "model.pt")]
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, *args], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    extra, estimate = map(int, out.stdout.split()[-2:])
    assert estimate / 3 < extra < estimate, (extra, estimate)


def test_a_photo_over_the_cpu_memory_is_tiled_with_the_same_output(model_file, caplog,
                                                                   monkeypatch):
    x = smooth_image(160, 160)
    untiled = Stylizer(model_file, device="cpu", overlap=48)(x)
    monkeypatch.setattr(stylenet.stylize, "available_memory", lambda: 200_000)
    with caplog.at_level(logging.INFO):
        out = Stylizer(model_file, device="cpu", overlap=48)(x)
    assert "does not fit in cpu memory untiled: tiling" in caplog.text
    assert psnr(out, untiled) >= 40
