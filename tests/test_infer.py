import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from conftest import ROOT
from infer import infer
from stylenet.export import ModelFileError, load_model, save_model
from stylenet.image import ImageError, load_tensor
from stylenet.transformer import TransformerNet


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    net = TransformerNet(channels=(4, 8, 8), num_residual=1)
    return save_model(tmp_path / "model.pt", net, {"arch": net.config(), "style": {"name": "t"}})


def cfg(**kw):
    """infer.yaml as the command line would compose it, on the CPU."""
    with initialize_config_dir(config_dir=str(ROOT / "configs" / "infer"), version_base="1.3"):
        base = compose(config_name="infer", overrides=["device=cpu"])
    with open_dict(base):
        for k, v in kw.items():
            base[k] = str(v) if isinstance(v, os.PathLike) else v
    return base


def test_single_image_keeps_size(model_file, photo, tmp_path):
    out = tmp_path / "out" / "styled.jpg"
    infer(cfg(model=model_file, input=photo, output=out))
    assert load_tensor(out).shape == load_tensor(photo).shape


def test_folder_keeps_tree_and_goes_on_past_bad_files(model_file, photo, tmp_path):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.png").write_bytes(photo.read_bytes())
    (src / "b.png").write_bytes(photo.read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    written = infer(cfg(model=model_file, input=src, output=tmp_path / "styled"))
    assert sorted(p.relative_to(tmp_path / "styled").as_posix() for p in written) == ["b.png", "sub/a.png"]
    assert not list((tmp_path / "styled").rglob("*.tmp"))


def test_never_overwrites_unless_asked(model_file, photo):
    before = photo.read_bytes()
    with pytest.raises(ImageError, match="overwrite"):
        infer(cfg(model=model_file, input=photo, output=photo))
    assert photo.read_bytes() == before
    infer(cfg(model=model_file, input=photo, output=photo, overwrite=True))
    assert photo.read_bytes() != before


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_model_file_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "stylenet-model", "x": Evil()}, path)
    with pytest.raises(ModelFileError, match="refused"):
        load_model(path)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_truncated_and_foreign_model_files_are_refused(model_file, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(model_file.read_bytes()[:2000])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(cut)
    other = tmp_path / "other.pt"
    data = torch.load(model_file, weights_only=True)
    data["arch"] = {"channels": [8, 16, 32], "num_residual": 1}
    torch.save(data, other)
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(other)


def test_command_line_errors_are_one_line(model_file, tmp_path):
    cmd = [sys.executable, str(ROOT / "infer.py"), f"model={model_file}",
           f"input={tmp_path / 'missing.jpg'}", f"output={tmp_path / 'o.jpg'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.jpg'}: input not found: check input=..."]
