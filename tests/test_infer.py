import errno
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir
from models import save_tiny_model
from omegaconf import open_dict
from PIL import Image

from infer import infer
from stylenet.image import ImageError, load_tensor
from stylenet.model_file import ModelFileError, load_model


@pytest.fixture
def model_file(tmp_path):
    return save_tiny_model(tmp_path / "model.pt")


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
    names = sorted(p.relative_to(tmp_path / "styled").as_posix() for p in written)
    assert names == ["b.png", "sub/a.png"]
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


@pytest.mark.slow
def test_command_line_errors_are_one_line(model_file, tmp_path):
    cmd = [sys.executable, str(ROOT / "infer.py"), f"model={model_file}",
           f"input={tmp_path / 'missing.jpg'}", f"output={tmp_path / 'o.jpg'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    missing = tmp_path / "missing.jpg"
    expected = f"error: {missing}: input not found: check input=..."
    assert proc.stderr.strip().splitlines() == [expected]


def test_glob_keeps_tree_and_mixed_folders_are_fine(model_file, photo, tmp_path):
    src = tmp_path / "shots"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.png").write_bytes(photo.read_bytes())
    (src / "y.png").write_bytes(photo.read_bytes())
    (src / "a" / "notes.txt").write_text("not an image")
    written = infer(cfg(model=model_file, input=f"{src}/**/*.png", output=tmp_path / "o",
                        format="webp"))
    assert sorted(p.relative_to(tmp_path / "o").as_posix() for p in written) == ["a/x.webp",
                                                                                 "y.webp"]
    with pytest.raises(ImageError, match="matches no"):
        infer(cfg(model=model_file, input=f"{src}/**/*.jpg", output=tmp_path / "o2"))


def test_output_folder_equal_to_input_is_refused(model_file, photo, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "p.png").write_bytes(photo.read_bytes())
    before = (src / "p.png").read_bytes()
    with pytest.raises(ImageError, match="overwrite the photos"):
        infer(cfg(model=model_file, input=src, output=src))
    assert (src / "p.png").read_bytes() == before and len(list(src.iterdir())) == 1


def test_full_disk_names_the_file_and_leaves_nothing_half_written(model_file, photo, tmp_path,
                                                                   monkeypatch, caplog):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (src / name).write_bytes(photo.read_bytes())
    save, calls = Image.Image.save, []

    def second_save_fills_the_disk(self, fp, *args, **kwargs):
        calls.append(fp)
        save(self, fp, *args, **kwargs)  # bytes reach the temporary file first
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", second_save_fills_the_disk)
    written = infer(cfg(model=model_file, input=src, output=tmp_path / "out"))
    assert sorted(p.name for p in written) == ["a.png", "c.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    assert "b.png: could not write (No space left on device): free some disk space" in caplog.text


def test_contact_sheet_of_photos_and_models(model_file, photo, tmp_path):
    other_file = save_tiny_model(tmp_path / "other.pt", seed=1, style="u")
    src = tmp_path / "in"
    src.mkdir()
    (src / "p.png").write_bytes(photo.read_bytes())
    (src / "q.png").write_bytes(photo.read_bytes())
    (sheet,) = infer(cfg(model=[str(model_file), str(other_file)], input=src,
                         output=tmp_path / "sheet.png", grid=True, grid_size=40))
    grid = load_tensor(sheet)
    assert grid.shape == (3, 3 * 40 + 4 * 4, 3 * 40 + 4 * 4)  # (style + 2 photos) x (in + 2 models)
    cells = [grid[:, 48:84, 4 + 44 * c : 44 + 44 * c] for c in range(3)]  # first photo's row
    assert (cells[1] - cells[2]).abs().mean() > 0.01  # the two models differ
    with pytest.raises(ValueError, match="grid=true"):
        infer(cfg(model=[str(model_file), str(other_file)], input=src, output=tmp_path / "x"))
