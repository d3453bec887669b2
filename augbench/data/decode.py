"""Image files → uint8 RGB tensors, with a clear error for any file that cannot be decoded.

Every on-disk dataset decodes through `decode_image`, so all of them agree on
what a pixel is: greyscale, palette, CMYK, YCbCr, RGBA (alpha dropped, as
torchvision's own PIL loader does) and 16-bit files all become 8-bit RGB, and
a truncated or corrupt JPEG/PNG raises `DataError` naming the path and the
reason instead of returning a half-grey image.

Pillow decodes rather than `torchvision.io`: it reads every format (BMP,
TIFF, … besides JPEG/PNG/WebP/GIF), its JPEG "draft" mode decodes large
photos directly at a reduced DCT scale when only a small image is wanted,
and torchvision 0.29 deprecates its own image decoders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from augbench.errors import DataError

_SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode_image(path: str | Path, min_size: int | None = None) -> Tensor:
    """The image at `path` as uint8 RGB (3, H, W).

    `min_size` is a hint for callers that resize afterwards: a JPEG is then
    decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides
    ≥ `min_size`, which is several times faster for large photos; other
    formats ignore it. 16-bit (and 32-bit integer) greyscale is scaled from
    the 0–65535 range; 16-bit RGB PNGs keep their high byte.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if min_size is not None:
                image.draft(None, (min_size, min_size))
            image.load()
            pixels = _to_rgb(image)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except DataError:
        raise
    except Exception as error:  # Pillow's format plugins raise OSError, SyntaxError, ValueError, EOFError, … by cause
        raise DataError(f"{path}: cannot decode image ({type(error).__name__}: {error})") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def _to_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a loaded Pillow image of any mode."""
    if image.mode in _SIXTEEN_BIT_GREY:
        # Pillow's convert("RGB") clips 16-bit values at 255 instead of rescaling, so rescale here.
        grey = np.asarray(image).astype(np.float64) / 257
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise DataError(f"{image.filename}: floating-point images (mode 'F') have no defined 0–255 range; "
                        "convert them to 8- or 16-bit first")
    return np.array(image.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only arrays
