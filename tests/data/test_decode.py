import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from augbench.data.decode import decode_image
from augbench.errors import DataError


@pytest.fixture
def pixels():
    rng = np.random.default_rng(0)
    # Smooth content, so JPEG round trips stay close to the source.
    ramp = np.linspace(0, 1, 48)
    image = np.stack([np.outer(ramp, ramp[:40]), np.outer(1 - ramp, ramp[:40]), np.full((48, 40), 0.5)], axis=2)
    return (image * 200 + rng.integers(0, 20, image.shape)).astype(np.uint8)  # (H, W, 3)


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def _write_png16_rgb(path, array: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG written by hand: Pillow cannot write this mode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = array.shape
    rows = b"".join(b"\x00" + array[row].astype(">u2").tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_rgb_png_round_trips_exactly(tmp_path, pixels):
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    decoded = decode_image(tmp_path / "rgb.png")
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 48, 40)
    assert torch.equal(decoded, _chw(pixels))


def test_rgba_png_drops_alpha(tmp_path, pixels):
    alpha = np.full(pixels.shape[:2] + (1,), 7, dtype=np.uint8)
    Image.fromarray(np.concatenate([pixels, alpha], axis=2), mode="RGBA").save(tmp_path / "rgba.png")
    assert torch.equal(decode_image(tmp_path / "rgba.png"), _chw(pixels))


def test_palette_png_expands_through_its_palette(tmp_path, pixels):
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "palette.png")
    with Image.open(tmp_path / "palette.png") as image:
        assert image.mode == "P"
        indices = np.asarray(image)
        palette = np.asarray(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
    assert torch.equal(decode_image(tmp_path / "palette.png"), _chw(palette[indices]))


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_greyscale_becomes_three_equal_channels(tmp_path, pixels, suffix):
    grey = pixels[:, :, 0]
    Image.fromarray(grey, mode="L").save(tmp_path / f"grey.{suffix}")
    decoded = decode_image(tmp_path / f"grey.{suffix}")
    assert decoded.shape == (3, 48, 40)
    assert torch.equal(decoded[0], decoded[1]) and torch.equal(decoded[1], decoded[2])
    tolerance = 0 if suffix == "png" else 6
    assert (decoded[0].int() - torch.from_numpy(grey).int()).abs().float().mean() <= tolerance


def test_cmyk_jpeg_becomes_rgb(tmp_path, pixels):
    Image.fromarray(pixels).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as image:
        assert image.mode == "CMYK"
    decoded = decode_image(tmp_path / "cmyk.jpg")
    assert decoded.shape == (3, 48, 40)
    assert (decoded.int() - _chw(pixels).int()).abs().float().mean() < 6


def test_16_bit_greyscale_png_is_rescaled_not_clipped(tmp_path):
    values = np.random.default_rng(1).integers(0, 65536, (20, 30)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode.startswith("I")
    decoded = decode_image(tmp_path / "grey16.png")
    expected = torch.from_numpy(np.rint(values / 257).astype(np.uint8))
    assert torch.equal(decoded, expected.expand(3, -1, -1))
    assert decoded.float().std() > 50  # a clipping conversion would leave nearly every pixel at 255


def test_16_bit_rgb_png_keeps_the_high_byte(tmp_path):
    values = np.random.default_rng(2).integers(0, 65536, (12, 9, 3)).astype(np.uint16)
    _write_png16_rgb(tmp_path / "rgb16.png", values)
    assert torch.equal(decode_image(tmp_path / "rgb16.png"), _chw((values >> 8).astype(np.uint8)))


def test_min_size_decodes_large_jpegs_at_reduced_scale_never_below_it(tmp_path):
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)).save(tmp_path / "big.jpg")
    assert decode_image(tmp_path / "big.jpg").shape == (3, 400, 600)
    reduced = decode_image(tmp_path / "big.jpg", min_size=96)
    assert min(reduced.shape[1:]) >= 96 and reduced.shape[1] < 400
    assert reduced.shape[1] * 600 == reduced.shape[2] * 400  # aspect ratio kept


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_truncated_file_names_its_path_and_reason(tmp_path, pixels, suffix):
    Image.fromarray(pixels).save(tmp_path / f"whole.{suffix}")
    data = (tmp_path / f"whole.{suffix}").read_bytes()
    truncated = tmp_path / f"truncated.{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"(?i){re.escape(str(truncated))}: cannot decode image \(.*truncated"):
        decode_image(truncated)


def test_corrupt_png_data_is_refused(tmp_path, pixels):
    Image.fromarray(pixels).save(tmp_path / "whole.png")
    data = bytearray((tmp_path / "whole.png").read_bytes())
    start = data.index(b"IDAT") + 8
    data[start : start + 16] = bytes(16)  # the chunk's CRC no longer matches
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{re.escape(str(corrupt))}: cannot decode image"):
        decode_image(corrupt)


@pytest.mark.parametrize("content", [b"", b"this is not an image" * 20, b"\xff\xd8\xff\xe0" + bytes(100)])
def test_non_image_bytes_are_refused(tmp_path, content):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: cannot decode image"):
        decode_image(path)


def test_missing_file_names_its_path(tmp_path):
    with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path / 'absent.png'))}: image file not found"):
        decode_image(tmp_path / "absent.png")


def test_a_jpeg_with_zeroed_bytes_mid_stream_stops_loading(tmp_path):
    from tests.bad_inputs.inputs import photo_jpeg_bytes, zeroed_jpeg_bytes

    (tmp_path / "intact.jpg").write_bytes(photo_jpeg_bytes())
    (tmp_path / "zeroed.jpg").write_bytes(zeroed_jpeg_bytes())
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'zeroed.jpg'}: corrupt JPEG (Corrupt JPEG data: ")):
        decode_image(tmp_path / "zeroed.jpg")
    # What Pillow alone returns, and strict=False accepts: a third of the pixels far off, and no error.
    damaged, intact = decode_image(tmp_path / "zeroed.jpg", strict=False), decode_image(tmp_path / "intact.jpg")
    assert ((damaged.int() - intact.int()).abs() > 40).any(dim=0).float().mean() > 0.2
    assert decode_image(tmp_path / "intact.jpg", min_size=64).shape == (3, 64, 64)


def test_progressive_jpegs_pass_the_corrupt_data_check(tmp_path, pixels):
    Image.fromarray(pixels).save(tmp_path / "progressive.jpg", quality=90, progressive=True)
    assert decode_image(tmp_path / "progressive.jpg").shape == (3, 48, 40)


def test_load_truncated_images_set_by_another_library_is_refused(tmp_path, pixels, monkeypatch):
    from PIL import ImageFile

    Image.fromarray(pixels).save(tmp_path / "image.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match=r"LOAD_TRUNCATED_IMAGES is True in this process"):
        decode_image(tmp_path / "image.png")
