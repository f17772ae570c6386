"""Turn a photo or drawing of a digit into the 28x28 input the network expects, the way MNIST was made.

MNIST (LeCun et al.) took each digit, scaled it to fit a 20x20 box keeping its aspect ratio (the
anti-aliasing gives grey levels), and placed it in a 28x28 field so that its centre of mass sits at
the centre. MNIST digits are light ink on a dark background. `to_mnist` does the same to any image:

    greyscale -> invert when the background is light -> crop to the ink -> longer side to 20 px
    -> paste into 28x28 with the centre of mass at (14, 14) -> values in [0, 1]

`read_image` (a path) and `decode_image` (bytes, e.g. an upload) open a PNG or JPEG with Pillow, and
`image_input` / `file_input` take bytes or a path all the way to the 28x28 input. Every image is treated as
hostile: only PNG and JPEG are opened (no plugin hands bytes to another program), the pixel count is read
from the header and refused above MAX_PIXELS before any pixel is decoded, big JPEGs are decoded at 1/2, 1/4
or 1/8 scale (draft mode), and any failure at all becomes one GpunetError line naming the source.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gpunet.errors import GpunetError
from gpunet.files import read_limited

SIZE = 28  # side of the network's input image
BOX = 20  # the longer side of the digit after scaling
CENTRE = 14.0  # where MNIST's centres of mass sit (row and column; measured mean over the test set: 14.0)
INK = 0.2  # a pixel is ink when its contrast is above this fraction of the darkest stroke (for the crop)
FORMATS = ("PNG", "JPEG")  # the only decoders ever used
MAX_PIXELS = 4_000_000  # decoded pixels: 2000x2000 is plenty for a drawing or a photo of a digit (Pillow's own: 179 M)
DRAFT = (512, 512)  # a JPEG is decoded at the smallest 1/2^k scale that keeps it at least this big
MAX_FILE = 50_000_000  # bytes of an image file `predict` reads (a 4-Mpixel PNG is at most ~16 MB)

# MAX_PIXELS is far stricter than Pillow's bomb check, and damaged EXIF is reported (or harmless): their warnings
# would only add lines to the one line an image gets.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)


def decode_image(data: bytes, source: str = "image") -> Image.Image:
    """Decode PNG or JPEG bytes; GpunetError naming `source` for anything else, for an image over MAX_PIXELS
    (refused from its header, before any pixel is decoded) and for any failure of the decoder."""
    if not data:
        raise GpunetError(f"{source}: empty file, not an image")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # lazy: reads the header only
    except UnidentifiedImageError:
        raise GpunetError(f"{source}: not a PNG or JPEG image; give a PNG or JPEG of a digit") from None
    except Exception as e:  # a damaged header, a declared size Pillow itself refuses, ...
        raise GpunetError(f"{source}: damaged or unreadable image ({type(e).__name__}: {e})") from None
    if image.format == "JPEG":
        image.draft("L", DRAFT)  # decode big photos at reduced scale; updates image.size
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise GpunetError(f"{source}: {width}x{height} image has {width * height:,} pixels, over the limit of "
                          f"{MAX_PIXELS:,}; scale it down first")
    try:
        image.load()
        return ImageOps.exif_transpose(image)  # photos from phones carry their rotation in EXIF
    except Exception as e:  # truncated data, a bad chunk, garbage EXIF, ...
        raise GpunetError(f"{source}: damaged or unreadable image ({type(e).__name__}: {e})") from None


def read_image(path: Path | str) -> Image.Image:
    """Open the image at `path`; GpunetError with one line if it is missing, too big, empty or not an image."""
    return decode_image(read_limited(path, MAX_FILE, "picture of a digit"), str(path))


def image_input(image: Image.Image, source: str) -> np.ndarray:
    """`to_mnist(image)`, with every failure (an odd mode, no digit, ...) as one GpunetError naming `source`."""
    try:
        return to_mnist(image)
    except GpunetError as e:
        raise GpunetError(f"{source}: {e}") from None
    except Exception as e:  # noqa: BLE001  hostile input: nothing may escape as a traceback
        raise GpunetError(f"{source}: cannot use this image ({type(e).__name__}: {e})") from None


def file_input(path: Path | str) -> np.ndarray:
    """The (28, 28) network input made from the image file at `path`; GpunetError with one line if it cannot."""
    return image_input(read_image(path), str(path))


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
    if not np.isfinite(grey).all():
        raise GpunetError("the image holds values that are not finite numbers")
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
