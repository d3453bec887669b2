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

A JPEG whose data is corrupt mid-stream (bytes zeroed or overwritten, not cut
off) decodes in Pillow without an error: libjpeg recovers, fills in what it
could not read, and reports the damage only as a warning that Pillow discards,
so the image comes back with blocks of wrong pixels. Each JPEG is therefore
also checked by libjpeg-turbo through simplejpeg with `strict=True`, which
turns those warnings ("Corrupt JPEG data: bad Huffman code", "… extraneous
bytes before marker 0xd9", "premature end of data segment") into errors, at
1/8 scale, where the check costs about half a full decode. `strict=False`
skips it. JPEG has no checksum: damage that leaves the entropy-coded data
self-consistent (it happens, rarely) is not detected by any decoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import simplejpeg
import torch
from PIL import Image, ImageFile
from torch import Tensor

from augbench.errors import DataError

_SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode_image(path: str | Path, min_size: int | None = None, strict: bool = True) -> Tensor:
    """The image at `path` as uint8 RGB (3, H, W).

    `min_size` is a hint for callers that resize afterwards: a JPEG is then
    decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides
    ≥ `min_size`, which is several times faster for large photos; other
    formats ignore it. 16-bit (and 32-bit integer) greyscale is scaled from
    the 0–65535 range; 16-bit RGB PNGs keep their high byte. `strict`: a JPEG
    that libjpeg decodes only with a corrupt-data warning raises DataError.
    """
    path = Path(path)
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # set by some other library in this process: it would hide truncation
        raise DataError(f"{path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process, so a truncated image "
                        "would decode with grey where its data is missing; set it back to False")
    try:
        with Image.open(path) as image:
            if strict and image.format in ("JPEG", "MPO"):
                _check_jpeg(path, path.read_bytes())  # a second read, from the page cache
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


# libjpeg's colour spaces (as simplejpeg's header reports them) → the output simplejpeg can give for each.
_JPEG_OUTPUT = {"Gray": "GRAY", "CMYK": "CMYK", "YCCK": "CMYK"}


def _check_jpeg(path: Path, data: bytes) -> None:
    """Raise DataError if libjpeg reports the JPEG `data` as corrupt, even where it could decode it anyway."""
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        simplejpeg.decode_jpeg(data, colorspace=_JPEG_OUTPUT.get(colorspace, "RGB"), min_height=1, min_width=1,
                               strict=True)
    except ValueError as error:
        raise DataError(f"{path}: corrupt JPEG ({str(error).strip()}); libjpeg would decode it with wrong pixels "
                        "where the data is damaged (data.strict_decoding=false accepts such files)") from None


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
