"""benchmarks/gpu_check.py with --tiny on the CPU, on real photos: every row runs the product's
own code (train, resume, Stylizer, ONNX Runtime, optimize.py) and passes; a broken setting makes
a row fail and the exit status 1."""

import importlib.resources
import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, needs_offline_vgg

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402
import gpu_check_infer  # noqa: E402

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg"]


@pytest.fixture
def photos(tmp_path):
    pytest.importorskip("skimage")
    data = importlib.resources.files("skimage") / "data"
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(data / name, folder / name)
    return folder


@pytest.fixture
def one_thread():
    # The CI machine's two cores are shared: two OpenMP threads spinning against other jobs
    # make the tiled passes ten times slower (the results are the same).
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_cpu_run_passes_every_row(photos, tmp_path, capsys, one_thread):
    pytest.importorskip("onnxruntime")
    needs_offline_vgg()
    out = tmp_path / "results"
    saved = gpu_check.main(["--photos", str(photos), "--device", "cpu", "--tiny",
                            "--threads", "1", "--out", str(out), "--work", str(tmp_path / "w")])
    printed = capsys.readouterr().out
    rows = {r["check"]: r for r in saved["rows"]}
    s = gpu_check.TINY
    expected = [f"train {s.first_steps} steps", f"resume to {s.steps}"]
    for size in s.stylize:
        expected += [f"stylize {size} px auto", f"stylize {size} px tile={s.tile}"]
    expected += ["onnx export + runtime", "optimize.py (gatys)"]
    assert list(rows) == expected
    failed = {k: r["detail"] for k, r in rows.items() if not r["ok"]}
    assert not failed
    assert saved["passed"]
    width = max(len(k) for k in rows)
    for r in rows.values():
        assert r["seconds"] > 0 and r["peak_gib"] > 0
        assert f"{r['check']:<{width}}  pass" in printed  # the one table

    assert "32-true channels_last=False compile=False" in rows[expected[0]]["detail"]
    assert f"step {s.first_steps} -> {s.steps}" in rows[expected[1]]["detail"]
    # tiled rows compare with the untiled output where it fits: every tiny size does
    for size in s.stylize:
        detail = rows[f"stylize {size} px tile={s.tile}"]["detail"]
        assert float(detail.split(": ")[1].split(" dB")[0]) >= gpu_check_infer.PSNR_FP32_DB
    assert (tmp_path / "w" / "run" / "model.pt").is_file()
    assert (tmp_path / "w" / "gatys.jpg").is_file()

    (path,) = out.glob("*_gpu_check_cpu_tiny.json")
    assert json.loads(path.read_text())["rows"] == saved["rows"]


@pytest.mark.slow
def test_a_failing_row_fails_the_command(photos, tmp_path):
    """A VGG file with only conv1_1..conv4_3 trains, but the gatys preset needs conv5_1: that
    row fails with a one-line reason, the others pass, and the exit status is 1."""
    pytest.importorskip("onnxruntime")
    from stylenet.vgg import VGGFeatures

    vgg = VGGFeatures(["relu4_3"], weights="random")
    path = tmp_path / "vgg_upto_conv4_3.pth"
    torch.save({f"features.{k}": v for k, v in vgg.features.state_dict().items()}, path)
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--photos", str(photos),
         "--device", "cpu", "--tiny", "--threads", "1", "--vgg", str(path), "--out",
         str(tmp_path / "results")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    (saved,) = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    rows = {r["check"]: r for r in saved["rows"]}
    assert not saved["passed"]
    assert [k for k, r in rows.items() if not r["ok"]] == ["optimize.py (gatys)"]
    assert "lack" in rows["optimize.py (gatys)"]["detail"]
    assert "FAIL" in run.stdout


def test_bad_settings_stop_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="--photos .*get_photos.sh"):
        gpu_check.main(["--photos", str(tmp_path / "nowhere"), "--device", "cpu", "--tiny"])
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"")
    bad = tmp_path / "vgg.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(SystemExit, match="--vgg .*vgg.pth.*stylenet.vgg_file") as e:
        gpu_check.main(["--photos", str(tmp_path / "photos"), "--device", "cpu", "--tiny",
                        "--vgg", str(bad)])
    assert "\n" not in str(e.value)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device cpu --tiny"):
            gpu_check.main(["--photos", str(tmp_path / "photos"), "--device", "cuda"])


def test_stylize_rows_run_without_the_cudnn_benchmark_training_left_on(tmp_path, monkeypatch):
    """infer.py never turns cudnn.benchmark on; Lightning's GPU trainer does, for the process."""
    from types import SimpleNamespace

    import stylenet.stylize
    from stylenet.model_file import save_model
    from stylenet.transformer import TransformerNet

    net = TransformerNet(channels=(8, 16, 32), num_residual=1)
    model = save_model(tmp_path / "m.pt", net, {"arch": net.config()})
    seen = []

    class Recording(stylenet.stylize.Stylizer):
        def __call__(self, *args, **kwargs):
            seen.append(torch.backends.cudnn.benchmark)
            return super().__call__(*args, **kwargs)

    monkeypatch.setattr(stylenet.stylize, "Stylizer", Recording)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # as training leaves it
    ctx = SimpleNamespace(model=model, device=torch.device("cpu"), s=SimpleNamespace(overlap=32),
                          image=lambda size: torch.rand(3, size, size))
    out, _, _ = gpu_check_infer.stylize(ctx, 48, None)
    assert out.shape == (3, 48, 48) and seen == [False]
