"""Hostile images for `gpunet predict` and `gpunet serve`: bombs refused from the header before any pixel is
decoded, formats other than PNG and JPEG refused, odd modes and garbage metadata as one line, and a seeded fuzz
over damaged PNGs and JPEGs where the only outcomes are an input for the network or one GpunetError line."""

import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from gpunet.core.backend import get_backend
from gpunet.apps.cli import app
from gpunet.errors import GpunetError
from gpunet.core.model import MLP
from gpunet.apps.preprocess import DRAFT, MAX_PIXELS, decode_image, image_input
from gpunet.runs.store import save_model

from helpers import mutate

ROOT = Path(__file__).resolve().parents[2]


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width x height, all black: a few kB that decode to width*height bytes."""
    row = b"\0" + bytes((width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def drawing(size=(120, 120), mode="L") -> Image.Image:
    image = Image.new("L", size, 255)
    w, h = size
    ImageDraw.Draw(image).line([(w // 4, h // 5), (3 * w // 4, h // 5), (w // 3, 4 * h // 5)], fill=0,
                               width=max(2, min(size) // 12))
    return image.convert(mode)


def with_exif_chunk(png: bytes, exif: bytes) -> bytes:
    """`png` with an eXIf chunk holding `exif` inserted before its first IDAT."""
    at = png.index(b"IDAT") - 4
    return png[:at] + chunk(b"eXIf", exif) + png[at:]


def outcome(data: bytes) -> str:
    """"ok" when the bytes make a network input, else the GpunetError line (anything else fails the test)."""
    try:
        x = image_input(decode_image(data, "upload"), "upload")
    except GpunetError as e:
        assert "\n" not in str(e) and str(e).startswith("upload: ")
        return str(e)
    assert x.shape == (28, 28) and x.dtype == np.float32 and np.isfinite(x).all()
    return "ok"


# Bombs ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width, height", [(9400, 9400), (13000, 13000), (1, 20_000_000), (2001, 2000)])
def test_bombs_are_refused_from_the_header_before_decoding(width, height, monkeypatch):
    data = png_bomb(width, height)
    assert len(data) < 200_000

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(Image.core, "new", no_decoding)  # nor any pixel memory allocated
    message = rf"{width}x{height} image has {width * height:,} pixels, over the limit of 4,000,000"
    with pytest.raises(GpunetError, match=message):
        decode_image(data, "upload")


def test_the_pixel_cap_itself_is_decoded():
    assert MAX_PIXELS == 2000 * 2000
    assert decode_image(png_bomb(2000, 2000)).size == (2000, 2000)
    assert decode_image(png_bomb(1, MAX_PIXELS)).size == (1, MAX_PIXELS)


def peak_rss_kb(code: str) -> int:
    """The peak resident memory (kB) of a fresh Python running `code` after importing Pillow and gpunet."""
    script = textwrap.dedent("""
        import resource, sys
        sys.path.insert(0, sys.argv[1])
        sys.path[:0] = sys.argv[2:]
        from test_hostile_images import png_bomb
        from gpunet.errors import GpunetError
        from gpunet.apps.preprocess import decode_image
        data = png_bomb(9400, 9400)
    """) + textwrap.dedent(code) + "\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    out = subprocess.run([sys.executable, "-c", script, str(ROOT), str(ROOT / "tests"),
                          str(ROOT / "tests" / "apps")], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1])


def test_a_bomb_is_refused_in_bounded_memory():
    """A 9400x9400 PNG took 1.8 GB before the pixel cap; refusing it must cost next to nothing (bound: 50 MB)."""
    baseline = peak_rss_kb("")
    refused = peak_rss_kb("""
        try:
            decode_image(data)
        except GpunetError:
            pass
        else:
            raise SystemExit("the bomb was decoded")
    """)
    assert refused - baseline < 50_000, (baseline, refused)


def test_big_jpeg_photos_are_decoded_at_reduced_scale():
    photo = drawing((4000, 3000))  # 12 Mpixels: over the cap in full, fine at 1/4 scale
    data = encoded(photo, "JPEG", quality=90)
    image = decode_image(data)
    assert image.size == (1000, 750)  # the smallest 1/2^k scale at least DRAFT
    assert min(image.size) >= min(DRAFT)
    assert outcome(data) == "ok"


# Formats, modes and metadata ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: encoded(Image.new("LAB", (40, 40)), "TIFF"),
    lambda: encoded(Image.fromarray(np.array([[np.inf, -np.inf], [0, 1]], dtype=np.float32)), "TIFF"),
    lambda: encoded(drawing(), "GIF"),
    lambda: encoded(drawing(), "BMP"),
    lambda: encoded(drawing(mode="RGB"), "WEBP") if "WEBP" in Image.SAVE else encoded(drawing(), "TIFF"),
    lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    lambda: b"<svg xmlns='http://www.w3.org/2000/svg'/>",
], ids=["lab-tiff", "inf-float-tiff", "gif", "bmp", "webp", "eps", "svg"])
def test_only_png_and_jpeg_are_opened(make):
    assert "not a PNG or JPEG image" in outcome(make())


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_every_png_mode_makes_an_input(mode):
    assert outcome(encoded(drawing(mode=mode), "PNG")) == "ok"


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_jpeg_modes(mode):
    assert outcome(encoded(drawing(mode=mode), "JPEG")) == "ok"


@pytest.mark.parametrize("exif", [b"garbage!" * 10, b"MM\x00\x2a\x00\x00\x00\x08\xff\xff" + bytes(50),
                                  b"II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x09\x00",
                                  b"", b"Exif\x00\x00" + bytes(3)])
def test_garbage_exif_is_one_line_or_ignored(exif):
    result = outcome(with_exif_chunk(encoded(drawing(), "PNG"), exif))
    assert result == "ok" or "unreadable image" in result


def test_transparent_blank_and_flat_images_are_one_line():
    assert "no digit" in outcome(encoded(Image.new("RGBA", (50, 50), (0, 0, 0, 0)), "PNG"))
    assert "no digit" in outcome(encoded(Image.new("L", (1, 1), 0), "PNG"))
    assert "empty file" in outcome(b"")


# Fuzz -------------------------------------------------------------------------------------------------------

def size_fields(data: bytes) -> list[int]:
    """Where the image size is declared: PNG's IHDR width and height, or a JPEG SOF's."""
    return [data.find(b"IHDR") + 4 if data.startswith(b"\x89PNG") else data.find(b"\xff\xc0") + 5]


def test_fuzzed_images_give_an_input_or_one_line():
    rng = np.random.default_rng(11)
    seeds = [encoded(drawing(), "PNG"), encoded(drawing(mode="RGBA"), "PNG"), encoded(drawing(mode="P"), "PNG"),
             encoded(drawing(), "JPEG"), encoded(drawing(mode="RGB"), "JPEG", progressive=True)]
    outcomes = [outcome(mutate(seeds[i % len(seeds)], rng, size_fields)) for i in range(400)]
    assert 0 < outcomes.count("ok") < len(outcomes)  # both kinds happen: the fuzz reaches the decoders


# The command --------------------------------------------------------------------------------------------------------

def test_predict_reports_each_hostile_file_and_still_runs_the_good_ones(tmp_path):
    model = tmp_path / "model.npz"
    save_model(model, MLP(get_backend("cpu"), (784, 16, 10)), {"dataset": "mnist"})
    files = {"good.png": encoded(drawing(), "PNG"), "bomb.png": png_bomb(9400, 9400),
             "lab.tif": encoded(Image.new("LAB", (40, 40)), "TIFF"),
             "exif.png": with_exif_chunk(encoded(drawing(), "PNG"), b"garbage!" * 10),
             "cut.jpg": encoded(drawing(), "JPEG")[:200], "good.jpg": encoded(drawing(), "JPEG")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = CliRunner().invoke(app, ["predict", str(model), *(str(tmp_path / n) for n in files), "--json"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert any("bomb.png: 9400x9400" in e for e in errors) and any("lab.tif: not a PNG or JPEG" in e for e in errors)
    assert any("cut.jpg" in e for e in errors)
    predicted = {Path(r["path"]).name for r in __import__("json").loads(
        result.output[result.output.index("["):]) if "prediction" in r}
    assert {"good.png", "good.jpg"} <= predicted


@pytest.mark.skipif(not os.environ.get("PATH"), reason="needs a PATH to look for Ghostscript")
def test_eps_never_reaches_ghostscript(tmp_path, monkeypatch):
    """Pillow's EPS plugin runs `gs`; with PNG and JPEG only, an EPS upload is refused before any plugin sees it."""
    fake_gs = tmp_path / "gs"
    fake_gs.write_text(f"#!/bin/sh\ntouch {tmp_path / 'ran'}\n")
    fake_gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\nshowpage\n"
    assert "not a PNG or JPEG" in outcome(eps)
    assert not (tmp_path / "ran").exists()
