import pytest
import torch

from stylenet.color import check_strength
from stylenet.image import ImageError, check_image_path, image_grid, letterbox


def test_image_grid_places_images_row_by_row_with_padding():
    red, green, blue = (torch.zeros(3, 4, 6).index_fill_(0, torch.tensor([c]), 1.0)
                        for c in range(3))
    grid = image_grid([red, green, blue], nrow=2, padding=2, pad_value=0.5)
    assert grid.shape == (3, 2 * 4 + 3 * 2, 2 * 6 + 3 * 2)
    assert torch.equal(grid[:, 2:6, 2:8], red) and torch.equal(grid[:, 2:6, 10:16], green)
    assert torch.equal(grid[:, 8:12, 2:8], blue)
    assert (grid[:, 8:12, 10:16] == 0.5).all()  # the empty fourth cell
    assert (grid[:, :2] == 0.5).all() and (grid[:, :, 8:10] == 0.5).all()  # padding


def test_letterbox_keeps_the_aspect_on_white():
    cell = letterbox(torch.zeros(3, 10, 20), 40)
    assert cell.shape == (3, 40, 40)
    assert (cell[:, :9] == 1).all() and (cell[:, 11:29] == 0).all() and (cell[:, 31:] == 1).all()


def test_one_extension_check_names_the_setting():
    assert check_image_path("a/b.WebP").name == "b.WebP"
    with pytest.raises(ImageError, match=r"^output=a\.gif: unknown image extension"):
        check_image_path("a.gif")
    with pytest.raises(ImageError, match=r"^format=tiff: "):
        check_image_path("x.tiff", "format", value="tiff")


def test_one_strength_check():
    assert check_strength(1) == 1.0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"strength={bad}: use a value from 0"):
            check_strength(bad)


def test_a_labels_words_stay_apart():
    """Pillow's FreeType default font draws a space 2 px wide ("held-outcontent" on a plot)."""
    from PIL import Image

    from stylenet.image import label_draw

    def inked_width(text):
        img = Image.new("L", (200, 20), 255)
        label_draw(img).text((2, 2), text, fill=0)
        cols = [x for x in range(200) if any(img.getpixel((x, y)) < 128 for y in range(20))]
        return cols[-1] - cols[0]

    assert inked_width("a b") >= inked_width("ab") + 4
