"""TensorBoard's HParams tab: the settings a user sweeps, and validation metrics that have values
while a run goes (and after it is killed), not only once it has ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from tensorboard.plugins.hparams import plugin_data_pb2

from train import SWEPT_SETTINGS


def read_events(run_dir: Path) -> tuple[dict[str, dict[int, float]], dict, list[str]]:
    """({scalar tag: {step: value}}, the hparams of the session, the metrics it declares)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, hparams, declared = {}, {}, []
    for path in run_dir.glob("tensorboard/events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
        for content in acc.PluginTagToContent("hparams").values():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                hparams = {k: v for k, v in data.session_start_info.hparams.items()}
            if data.HasField("experiment"):
                declared = [m.name.tag for m in data.experiment.metric_infos]
    return scalars, hparams, declared


def test_a_killed_run_shows_its_first_validation_in_the_hparams_tab(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "data=synthetic", "loss.vgg.weights=random",
           "trainer=cpu", "model.net.channels=[8,16,32]", "model.net.num_residual=1",
           "trainer.max_steps=100000", "trainer.val_check_interval=2",
           "trainer.enable_progress_bar=false", "style.style_weight=3e9",
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
            if 2 in read_events(run_dir)[0].get("hp/val_total", {}):  # step 0: NaN, declared
                break
        assert proc.poll() is None, "training ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    scalars, hparams, declared = read_events(run_dir)
    assert sorted(declared) == ["hp/val_content", "hp/val_style", "hp/val_total"]
    for tag in declared:  # the first validation's values, under the declared names
        assert 2 in scalars[tag], (tag, scalars.get(tag))
        assert scalars[tag][2] == scalars["val/" + tag.removeprefix("hp/val_")][2]
    # the settings a user sweeps, by their override names, and nothing else
    assert set(hparams) <= set(SWEPT_SETTINGS)
    assert hparams["style.style_weight"].number_value == 3e9
    assert hparams["model.net.channels"].string_value == "[8, 16, 32]"
    assert hparams["style.name"].string_value == "mosaic"
    assert hparams["trainer.max_steps"].number_value == 100000
