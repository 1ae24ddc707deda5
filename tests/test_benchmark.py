"""benchmarks/bench.py on the CPU at tiny sizes: it runs, checks agreement, writes its JSON.
Speeds are never asserted here (they live in benchmarks/NOTES.md and results/)."""

import json
import math
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402


def test_agreement_accepts_bf16_noise_and_rejects_a_wrong_path():
    ref = {"content": 2.0, "style": 10.0, "tv": 0.0, "total": 12.0}
    close = {"content": 2.02, "style": 10.1, "tv": 0.0, "total": 12.12}
    assert bench.agreement(ref, close, grad_cos=0.999)[0]
    off = {**close, "style": 11.0, "total": 13.02}  # 10% off: a real bug, not rounding
    ok, detail = bench.agreement(ref, off, grad_cos=0.999)
    assert not ok and "style" in detail
    assert not bench.agreement(ref, close, grad_cos=0.9)[0]  # the update points elsewhere


def test_psnr():
    a = torch.zeros(3, 8, 8)
    assert bench.psnr(a, a) == math.inf
    assert bench.psnr(a, a + 0.1) == pytest.approx(20.0)
    assert bench.psnr(a, a - 5) == math.inf  # both clamp to 0..1 first, like saved images


@pytest.mark.slow
def test_small_benchmark_runs_every_section_and_writes_json(tmp_path, capsys):
    results = bench.main(["--device", "cpu", "--small", "--out", str(tmp_path), "--workers", "1"])
    table = capsys.readouterr().out
    for section in bench.SECTIONS:
        assert f"[{section}]" in table, section
    (path,) = tmp_path.glob("*_cpu_small.json")
    assert results["path"] == str(path)
    saved = json.loads(path.read_text())
    assert saved["meta"]["torch"] == torch.__version__ and saved["meta"]["small"] is True
    assert saved["meta"]["date"] and saved["meta"]["device_name"]

    train = saved["train"]
    assert train["rows"][0]["name"].startswith("naive") and train["rows"][0]["speedup"] == 1
    fast = train["rows"][-1]
    assert fast["bf16"] and fast["channels_last"] and fast["fused"] and fast["batch"] == 4
    assert train["agrees"] and all(r["agrees"] for r in train["rows"])
    assert train["gflop_per_image"] > 0 and all(r["images_per_s"] > 0 for r in train["rows"])

    infer = saved["infer"]
    assert [(r["size"], r["batch"]) for r in infer["rows"]] == [(48, 1), (32, 4)]
    assert all(r["psnr_db"] >= 40 and r["agrees"] for r in infer["rows"])

    e2e = saved["e2e"]["rows"]
    assert [r["workers"] for r in e2e] == [0, 1] and [r["draft"] for r in e2e] == [False, True]
    # 6 files, 1 held out: two naive batches of 2, one fast batch of 4 (drop_last)
    assert [r["images"] for r in e2e] == [4, 4]
    assert all(0 <= r["loader_wait_fraction"] <= 1 for r in e2e)

    assert {(r["draft"], r["workers"]) for r in saved["loader"]["rows"]} == {
        (False, 0), (False, 1), (True, 0), (True, 1)}
    assert all(r["images"] == 6 for r in saved["loader"]["rows"])

    cpu = saved["cpu_infer"]["rows"]
    assert [r["net"] for r in cpu] == ["full", "small"]
    assert all(r["onnx_vs_torch_psnr_db"] >= 40 for r in cpu if r["onnxruntime_s"] is not None)

    memory = saved["memory"]
    if "skipped" not in memory:
        assert memory["shape"] == [3, 160, 160] and memory["agrees"]
