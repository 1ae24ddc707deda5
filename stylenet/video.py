"""Stylize a video with PyAV: frames decoded, stylized in batches, re-encoded; audio copied.

The output is written through atomic_write, so a failed or interrupted run leaves no half video.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import torch

from stylenet.image import ImageError, check_overwrite
from stylenet.util import atomic_write

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska",
               ".webm": "webm", ".avi": "avi"}


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _codec(ext: str) -> str:
    import av

    # H.264 plays everywhere; WebM only takes VP8/VP9/AV1. mpeg4 is the fallback of FFmpeg
    # builds without libx264.
    wanted = ["libvpx-vp9", "libvpx"] if ext == ".webm" else ["libx264", "h264", "mpeg4"]
    for name in wanted:
        if name in av.codecs_available:
            return name
    raise ImageError(f"output={ext}: this FFmpeg build has none of {wanted}: use .mp4 or .mkv")


def stylize_video(
    stylize: Callable[[torch.Tensor], torch.Tensor],
    src: str | Path,
    dst: str | Path,
    batch_size: int = 4,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Stylize every frame of src into dst. stylize maps (B, 3, H, W) floats to the same shape.
    Frame timestamps and the first audio stream (copied, not re-encoded) are kept. An existing
    dst is replaced only with overwrite, and never when it is src."""
    import av

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ImageError(f"{src}: input not found: check input=...")
    check_overwrite(dst, overwrite, src)
    if dst.exists() and dst.resolve() == src.resolve():
        # The input is still being read while the output is written.
        raise ImageError(f"{dst}: a video cannot be stylized in place: choose another output")
    ext = dst.suffix.lower()
    if ext not in _CONTAINERS:
        raise ImageError(f"{dst}: a video input needs a video output: use {VIDEO_EXTENSIONS}")
    try:
        inp = av.open(str(src))
    except (av.FFmpegError, OSError) as e:
        raise ImageError(f"{src}: not a readable video ({e}): check the file") from None
    try:
        with inp:
            return _transcode(inp, src, dst, ext, stylize, batch_size, progress)
    except av.FFmpegError as e:
        raise ImageError(f"{src}: video could not be transcoded ({e}): check the file") from None


def _transcode(inp, src: Path, dst: Path, ext: str, stylize, batch_size: int, progress) -> Path:
    import av
    from tqdm import tqdm

    if not inp.streams.video:
        raise ImageError(f"{src}: holds no video stream")
    vin = inp.streams.video[0]
    ain = inp.streams.audio[0] if inp.streams.audio else None
    width, height = vin.codec_context.width, vin.codec_context.height
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    codec = _codec(ext)
    with atomic_write(dst) as f, av.open(f, "w", format=_CONTAINERS[ext]) as out:
        vout = out.add_stream(codec, rate=rate)
        vout.width, vout.height = width, height
        # 4:2:0 needs even sides; odd-sized videos keep full chroma instead of being cropped.
        vout.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        vout.time_base = vin.time_base
        if codec == "libx264":
            vout.options = {"crf": "18"}  # visually lossless: the stylization is the point
        aout = out.add_stream_from_template(ain) if ain is not None else None
        # progress None: a bar only on a terminal (tqdm's own rule)
        bar = tqdm(total=vin.frames or None, unit="frame", desc=src.name,
                   disable=None if progress is None else not progress)
        frames: list = []

        def flush(chunk: list) -> None:
            batch = torch.stack([
                torch.from_numpy(fr.to_ndarray(format="rgb24")).permute(2, 0, 1)
                for fr in chunk
            ]).float() / 255  # (B, 3, H, W)
            styled = stylize(batch).mul(255).round().clamp(0, 255).byte()
            for fr, img in zip(chunk, styled, strict=True):
                new = av.VideoFrame.from_ndarray(img.permute(1, 2, 0).numpy(), format="rgb24")
                new.pts, new.time_base = fr.pts, fr.time_base
                out.mux(vout.encode(new))
            bar.update(len(chunk))

        streams = [s for s in (vin, ain) if s is not None]
        for packet in inp.demux(*streams):
            if packet.stream is ain:
                if packet.dts is not None:  # the demuxer's final empty packet
                    packet.stream = aout
                    out.mux(packet)
                continue
            frames.extend(packet.decode())
            while len(frames) >= batch_size:
                flush(frames[:batch_size])
                del frames[:batch_size]
        if frames:
            flush(frames)
        out.mux(vout.encode(None))
        bar.close()
    return dst
