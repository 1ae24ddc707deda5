"""Every config file in configs/ composes, and the values that matter resolve."""

from pathlib import Path

import pytest
from conftest import CONFIGS, ROOT, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

# Options that need a value from the user; composing them checks the rest with one given.
NEEDS = {
    "data/folder": ["data.dataset.root=/photos"],
    "data/tensor": ["data.dataset.path=crops.pt"],
    "style/custom": ["style.name=x", "style.image=x.jpg"],
    "experiment/add_painting": ["base=m.pt", "style.name=x", "style.image=x.jpg"],
}
GROUP_OPTIONS = sorted(
    f"{p.parent.name}/{p.stem}"
    for p in CONFIGS.glob("*/*.yaml")
    if p.parent.name not in ("hydra", "infer", "optimize")
)


def test_there_is_something_to_check():
    assert {"data/coco", "loss/vgg16_offline", "trainer/ddp", "experiment/demo"} <= set(
        GROUP_OPTIONS
    )


@pytest.mark.parametrize("option", GROUP_OPTIONS)
def test_every_group_option_composes_and_resolves(option, tmp_path):
    group, name = option.split("/")
    cfg = compose_train(tmp_path, [f"{group}={name}", *NEEDS.get(option, [])], fast=False)
    resolved = OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
        resolve=True,
        throw_on_missing=True,
    )
    assert resolved["style"]["style_weight"] > 0
    assert resolved["loss"]["style_weight"] == resolved["style"]["style_weight"]


def test_defaults_are_the_reference_recipe(tmp_path):
    cfg = compose_train(tmp_path, [], fast=False)
    assert cfg.style.content_weight == 1e5 and cfg.style.style_weight == 1e10
    assert cfg.model.optimizer.lr == 1e-3 and cfg.data.batch_size == 4
    assert cfg.data.dataset.image_size == 256 and cfg.trainer.max_steps == 40000
    assert cfg.loss.content_layer == "relu2_2"
    assert list(cfg.loss.style_layers) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    assert Path(cfg.data.dataset.root).parts[-2:] == ("coco", "train2014")


def test_infer_config_composes():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS / "infer"), version_base="1.3"):
        cfg = compose("infer", overrides=["model=m.pt", "input=a.jpg", "output=b.jpg"])
    assert cfg.device == "auto" and cfg.overwrite is False


def test_experiment_reference_keeps_pytorchs_default_settings(tmp_path):
    """The speed baseline runs as the example does: fp32, eager, batch 4, no workers, and
    cudnn.benchmark left alone (Lightning's benchmark=None), unlike the fast path."""
    ref = compose_train(tmp_path, ["experiment=reference"], fast=False)
    assert ref.trainer.precision == "32-true" and ref.trainer.benchmark is None
    assert ref.data.batch_size == 4 and ref.data.num_workers == 0
    assert ref.model.compile is False and ref.model.channels_last is False
    assert compose_train(tmp_path, [], fast=False).trainer.benchmark is True


def test_every_bundled_style_image_has_a_licence_row_and_a_config(tmp_path):
    styles = ROOT / "data" / "styles"
    rows = {line.split("|")[1].strip(): line for line in (styles / "README.md").read_text()
            .splitlines() if line.startswith("| ") and not line.startswith(("| file", "| ---"))}
    images = sorted(p.name for p in styles.iterdir() if p.suffix in (".jpg", ".png"))
    assert len(images) == 7 and sorted(rows) == images
    for name in images:
        assert "public domain" in rows[name] or "MIT" in rows[name], rows[name]
        config = Path(name).stem
        cfg = compose_train(tmp_path, [f"style={config}"], fast=False)
        assert Path(cfg.style.image).resolve() == (styles / name).resolve()
        assert f"`style={config}`" in rows[name]


def test_the_zoo_baseline_is_the_reference_loss_on_the_zoo_recipes_data(tmp_path):
    """experiment=cpu_baseline differs from experiment=cpu_zoo only in what the reference recipe
    sets differently: its loss weights, no total variation, no identity start, a near-black
    start. Photos, crops, steps and schedule stay the zoo recipe's, so the two compare."""
    zoo = compose_train(tmp_path, ["experiment=cpu_zoo", "style=starry_night"], fast=False)
    base = compose_train(tmp_path, ["experiment=cpu_baseline", "style=starry_night"], fast=False)
    ref = compose_train(tmp_path, ["style=starry_night"], fast=False)  # the defaults' loss
    assert base.data == zoo.data and base.trainer == zoo.trainer
    assert base.model.optimizer == zoo.model.optimizer and base.model.scheduler is None
    assert base.style.style_weight == ref.style.style_weight
    assert base.style.tv_weight == ref.style.tv_weight == 0 < zoo.style.tv_weight
    assert base.style.content_weight == ref.style.content_weight
    assert set(base.loss.style_layers.values()) == {1.0}
    assert base.model.identity_steps == 0 and base.model.net.start_grey is False
    assert base.model.style_warmup_steps == ref.model.style_warmup_steps == 0
    assert base.loss.content_palette is ref.loss.content_palette is False
    assert zoo.loss.content_palette is True and zoo.model.style_warmup_steps > 0
