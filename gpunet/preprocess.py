"""Turn a photo or drawing of a digit into the 28x28 input the network expects, the way MNIST was made.

MNIST (LeCun et al.) took each digit, scaled it to fit a 20x20 box keeping its aspect ratio (the
anti-aliasing gives grey levels), and placed it in a 28x28 field so that its centre of mass sits at
the centre. MNIST digits are light ink on a dark background. `to_mnist` does the same to any image:

    greyscale -> invert when the background is light -> crop to the ink -> longer side to 20 px
    -> paste into 28x28 with the centre of mass at (14, 14) -> values in [0, 1]

`read_image` (a path) and `decode_image` (bytes, e.g. an upload) open an image with Pillow and raise
GpunetError with one line for an empty file or one that is not an image.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gpunet.errors import GpunetError

SIZE = 28  # side of the network's input image
BOX = 20  # the longer side of the digit after scaling
CENTRE = 14.0  # where MNIST's centres of mass sit (row and column; measured mean over the test set: 14.0)
INK = 0.2  # a pixel is ink when its contrast is above this fraction of the darkest stroke (for the crop)


def decode_image(data: bytes, source: str = "image") -> Image.Image:
    """Decode image bytes (PNG, JPEG, ... anything Pillow reads); GpunetError naming `source` if it cannot."""
    if not data:
        raise GpunetError(f"{source}: empty file, not an image")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise GpunetError(f"{source}: not an image Pillow can read; give a PNG or JPEG of a digit") from None
    except Image.DecompressionBombError:
        raise GpunetError(f"{source}: image is too large to open safely; scale it down first") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise GpunetError(f"{source}: damaged or truncated image ({e})") from None
    return ImageOps.exif_transpose(image)  # photos from phones carry their rotation in EXIF


def read_image(path: Path | str) -> Image.Image:
    """Open the image at `path`; GpunetError with one line if it is missing, empty or not an image."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GpunetError(f"{path}: file not found") from None
    except OSError as e:
        raise GpunetError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_image(data, str(path))


def luminance(image: Image.Image) -> np.ndarray:
    """Grey levels (h, w) float32 of any Pillow image; transparent pixels take the background's tone."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(image.convert("F"), dtype=np.float32)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # A drawing on a transparent canvas: composite it over the tone opposite to its strokes.
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        strokes = np.asarray(rgba.convert("L"))[alpha > 0]
        light_strokes = strokes.size > 0 and strokes.mean() > 127
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light_strokes else (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32)


def to_mnist(image: Image.Image) -> np.ndarray:
    """A Pillow image of one digit -> (28, 28) float32 in [0, 1], light digit on black, centred like MNIST.

    Raises GpunetError when the image holds no digit (a single flat tone)."""
    grey = luminance(image)  # (h, w)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    ink = background - grey if background > (grey.min() + grey.max()) / 2 else grey - background
    peak = float(ink.max())
    if not peak > 0:
        raise GpunetError("no digit found: the image is a single flat tone")
    ink = np.clip(ink / peak, 0, 1)  # (h, w), 0 = background, 1 = the strongest stroke

    rows, cols = np.nonzero(ink > INK)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]  # crop to the ink
    h, w = ink.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL sizes are (width, height)
    digit = np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.Resampling.LANCZOS))
    digit = np.clip(digit, 0, 1)  # (<= 20, <= 20); Lanczos rings slightly outside [0, 1]

    # Place it so that its centre of mass lands on (14, 14), staying inside the 28x28 field.
    mass = digit.sum()
    if not mass > 0:
        raise GpunetError("no digit found: the ink vanished when scaled to 20 pixels")
    ys, xs = np.indices(digit.shape)
    com_y, com_x = (ys * digit).sum() / mass, (xs * digit).sum() / mass
    top = min(max(round(CENTRE - com_y), 0), SIZE - digit.shape[0])
    left = min(max(round(CENTRE - com_x), 0), SIZE - digit.shape[1])
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return out
