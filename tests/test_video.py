import numpy as np
import pytest
from models import save_tiny_model
from test_infer import cfg

from infer import infer
from stylenet.image import ImageError

av = pytest.importorskip("av")


@pytest.fixture
def model_file(tmp_path):
    return save_tiny_model(tmp_path / "model.pt")


def make_video(path, frames=3, size=(48, 32), audio=True):
    w, h = size
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = out.add_stream("aac", rate=8000, layout="mono") if audio else None
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[:, : (i + 1) * w // frames] = (200, 80 + 40 * i, 30)
            out.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(v.encode(None))
        if a is not None:
            t = np.arange(2400) / 8000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for k in range(0, 2400, 1024):
                frame = av.AudioFrame.from_ndarray(tone[:, k : k + 1024], format="fltp",
                                                   layout="mono")
                frame.sample_rate = 8000
                out.mux(a.encode(frame))
            out.mux(a.encode(None))


def test_three_frame_video_round_trips_with_audio(model_file, tmp_path):
    src = tmp_path / "clip.mp4"
    make_video(src)
    (dst,) = infer(cfg(model=model_file, input=src, output=tmp_path / "out" / "styled.mp4",
                       batch_size=2))
    with av.open(str(dst)) as res, av.open(str(src)) as orig:
        frames = [f.to_ndarray(format="rgb24") for f in res.decode(video=0)]
        first = next(orig.decode(video=0)).to_ndarray(format="rgb24")
        assert len(res.streams.audio) == 1
    assert len(frames) == 3 and frames[0].shape == (32, 48, 3)
    assert np.abs(frames[0].astype(int) - first).mean() > 5  # stylized, not copied
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_unreadable_video_is_a_clear_error_and_writes_nothing(model_file, tmp_path):
    src = tmp_path / "bad.mp4"
    src.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real video")
    with pytest.raises(ImageError, match="bad.mp4"):
        infer(cfg(model=model_file, input=src, output=tmp_path / "o" / "out.mp4"))
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    make_video(src, audio=False)
    with pytest.raises(ImageError, match="video output"):
        infer(cfg(model=model_file, input=src, output=tmp_path / "out.gif"))
