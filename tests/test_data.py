import logging

import numpy as np
import pytest
import torch
from PIL import Image

from stylenet.data import PhotoFolder, StyleDataModule
from stylenet.image import ImageError, load_tensor, open_rgb
from stylenet.memory import SyntheticImages


def _photo(size=(80, 60), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_recursive_folder_with_modes_and_bad_files(tmp_path, caplog):
    (tmp_path / "a" / "b").mkdir(parents=True)
    _photo().save(tmp_path / "a" / "one.jpg")
    _photo(seed=1).convert("L").save(tmp_path / "a" / "b" / "gray.png")
    _photo(seed=2).convert("P").save(tmp_path / "pal.png")
    _photo(seed=3).convert("RGBA").save(tmp_path / "rgba.webp")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "readme.txt").write_text("ignored: not an image extension")
    ds = PhotoFolder(root=str(tmp_path), image_size=32)
    assert len(ds) == 6
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(len(ds))]
    for image in items:
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert len(ds.bad_indices()) == 2
    assert "empty.jpg" in caplog.text and "notes.png" in caplog.text


def test_flat_and_tiny_photos_are_skipped(tmp_path):
    Image.new("RGB", (64, 64), (128, 128, 128)).save(tmp_path / "a_flat.png")
    _photo((10, 10)).save(tmp_path / "b_tiny.png")
    _photo().save(tmp_path / "c_good.png")
    ds = PhotoFolder(root=str(tmp_path), image_size=32, min_size=16)
    image = ds[0]
    assert len(ds.bad_indices()) == 2
    assert torch.equal(image, ds.load(2))


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .jpg"):
        PhotoFolder(root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="README"):
        PhotoFolder(root=str(tmp_path / "missing"))


def test_all_bad_files_stop_with_an_error_at_start_up(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="none of the 1 photos .* usable .*x.jpg"):
        PhotoFolder(root=str(tmp_path), image_size=16)


def test_files_going_bad_during_training_stop_with_an_error(tmp_path):
    _photo().save(tmp_path / "x.png")
    ds = PhotoFolder(root=str(tmp_path), image_size=16)
    (tmp_path / "x.png").write_bytes(b"")  # e.g. a network disk that went away
    with pytest.raises(RuntimeError, match="none of the 1 .*usable any more"):
        ds[0]


def test_exif_orientation_is_applied(tmp_path):
    img = _photo((40, 20))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert open_rgb(tmp_path / "rot.jpg").size == (20, 40)


def test_sixteen_bit_grayscale(tmp_path):
    a = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    t = load_tensor(tmp_path / "deep.png")
    assert t.shape == (3, 32, 32)
    assert t.min() == 0 and t.max() == 1


def test_huge_image_is_refused_before_decoding(tmp_path, monkeypatch):
    import stylenet.image

    _photo((50, 50)).save(tmp_path / "big.png")
    monkeypatch.setattr(stylenet.image, "MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="big.png.*downscale"):
        open_rgb(tmp_path / "big.png")


def test_datamodule_splits_and_previews_are_fixed():
    ds = SyntheticImages(n=10, image_size=16)
    dm = StyleDataModule(ds, batch_size=2, val_size=3, num_preview=2, num_workers=0)
    assert len(dm.train_set) == 7 and len(dm.val_set) == 3
    assert torch.equal(dm.preview_images(), dm.preview_images())
    images = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8
    with pytest.raises(ValueError, match="val_size"):
        StyleDataModule(ds, val_size=10)


def test_previews_can_be_larger_than_training_crops(tmp_path):
    for i in range(4):
        _photo((90, 70), seed=i).save(tmp_path / f"{i}.png")
    ds = PhotoFolder(root=str(tmp_path), image_size=32, resize=64, random_crop=True)
    dm = StyleDataModule(ds, batch_size=1, val_size=2, num_preview=2, preview_size=48)
    previews = dm.preview_images()
    assert previews.shape == (2, 3, 48, 48)
    # the whole photo's centre square, not a random crop of it
    assert torch.equal(previews[0], ds.load(2, random_crop=False, size=48))
    assert torch.equal(previews, dm.preview_images())


def test_a_small_folder_is_decoded_once_with_the_same_crops(tmp_path, monkeypatch, caplog):
    for i in range(3):
        _photo((120, 90), seed=i).save(tmp_path / f"{i}.jpg")
    _photo((10, 10), seed=9).save(tmp_path / "tiny.png")  # below min_size: never cached
    Image.new("RGB", (120, 90), (40, 90, 200)).save(tmp_path / "wall.png")  # flat: every crop
    kwargs = dict(root=str(tmp_path), image_size=32, resize=48, random_crop=True, min_size=16)
    plain = PhotoFolder(**kwargs)
    cached = PhotoFolder(**kwargs, cache_mb=1)
    keys = [(i % 5, seed) for seed, i in enumerate(range(15))]
    expected = [plain[k] for k in keys]

    opened = []
    real_open = PhotoFolder._open
    monkeypatch.setattr(PhotoFolder, "_open",
                        lambda self, i: opened.append(i) or real_open(self, i))
    with caplog.at_level(logging.WARNING):
        assert all(torch.equal(cached[k], e) for k, e in zip(keys, expected, strict=True))
    assert "wall.png: the crop is a near-constant colour" in caplog.text
    assert sorted(set(opened)) == [0, 1, 2, 3, 4] and opened.count(0) == 1  # decoded once each
    # the flat photo is decoded and cached before its crop is refused, then never read again
    assert sorted(cached.cache) == [0, 1, 2, 4] and cached.bad_indices() == plain.bad_indices()
    assert cached.bad_indices() == [3, 4]
    # previews are not the training crops' size: decoded as before, never from the cache
    assert torch.equal(cached.load(1, random_crop=False, size=40),
                       plain.load(1, random_crop=False, size=40))
    # a folder that would not fit is never cached
    assert PhotoFolder(**kwargs, cache_mb=1e-4).cache is None and plain.cache is None
