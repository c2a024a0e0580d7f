"""Image input: real X-rays, photos and DICOM load as 8-bit RGB; damaged or hostile files get typed errors.

Every variant (truncated, rotated, 16-bit, TIFF, WebP, bomb) is made in a temporary folder from the
real files in fixtures/images, so the tests exercise real decoders on real pixels.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.conftest import FIXTURES
from tools.imaging.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageInputError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from tools.imaging.load import ImageLimits, decode_image, load_image, load_image_async, sniff_format

IMAGES = FIXTURES / "images"
CXR = IMAGES / "cxr_nih_00000001_000_cardiomegaly.png"
JPEG = IMAGES / "small_rgb.jpeg"
DICOM = IMAGES / "encapsulated_cxr.dcm"


@pytest.mark.parametrize(
    ("path", "fmt", "size"), [(CXR, "png", (512, 512)), (JPEG, "jpeg", (100, 67)), (DICOM, "dicom", (1024, 1024))]
)
def test_real_files_load_as_8bit_rgb_with_their_hash(path: Path, fmt: str, size: tuple[int, int]) -> None:
    loaded = load_image(path)
    assert loaded.format == fmt
    assert loaded.image.mode == "RGB"
    assert loaded.size == size
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_grayscale_xray_keeps_its_pixels_in_every_channel() -> None:
    original = np.asarray(Image.open(CXR).convert("L"))
    loaded = np.asarray(load_image(CXR).image)
    for channel in range(3):
        assert np.array_equal(loaded[..., channel], original)


def test_compressed_dicom_is_decoded_and_its_tags_kept() -> None:
    loaded = load_image(DICOM)
    assert pydicom.dcmread(DICOM).file_meta.TransferSyntaxUID.is_compressed
    assert loaded.dicom_modality == "CR"
    pixels = np.asarray(loaded.image)
    assert pixels.std() > 10  # a real picture, not a blank decode


def test_format_is_judged_by_content_not_by_name(tmp_path: Path) -> None:
    disguised = tmp_path / "photo.jpg"
    disguised.write_bytes(CXR.read_bytes())
    assert load_image(disguised).format == "png"
    text = tmp_path / "scan.png"
    text.write_text("this is a letter from my doctor, not a picture")
    with pytest.raises(UnsupportedImageError, match=r"scan\.png: not a supported image"):
        load_image(text)


def test_gif_is_refused_with_the_supported_formats_named(tmp_path: Path) -> None:
    gif = tmp_path / "anim.gif"
    Image.open(JPEG).save(gif, format="GIF")
    with pytest.raises(UnsupportedImageError, match="PNG, JPEG, TIFF, WebP or DICOM"):
        load_image(gif)


def test_empty_missing_and_directory_paths_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(EmptyImageError, match=r"empty\.png: the file is empty"):
        load_image(empty)
    with pytest.raises(ImageInputError, match="no such file"):
        load_image(tmp_path / "gone.png")
    with pytest.raises(ImageInputError, match="is a directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("source", [CXR, JPEG, DICOM], ids=["png", "jpeg", "dicom"])
def test_truncated_files_are_corrupt_not_crashes(tmp_path: Path, source: Path) -> None:
    data = source.read_bytes()
    cut = tmp_path / f"cut{source.suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImageError, match=r"cut\.\w+: .*(damaged|truncated|cannot)"):
        load_image(cut)


def test_damaged_png_body_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(CXR.read_bytes())
    data[200:4000] = bytes(len(data[200:4000]))
    broken = tmp_path / "broken.png"
    broken.write_bytes(bytes(data))
    with pytest.raises(CorruptImageError):
        load_image(broken)


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny real PNG whose header is rewritten to declare a huge picture (CRC fixed, as an attacker would)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data[12:29]  # chunk type + 13 bytes of header data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_decompression_bomb_is_refused_from_the_header_without_touching_global_state(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(8_000, 8_000))  # over our limit, under Pillow's
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageTooLargeError, match=r"8000x8000 pixels.*refused before decoding"):
        load_image(bomb)
    bomb.write_bytes(_png_declaring(60_000, 60_000))  # Pillow's own guard fires first; same error type
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        load_image(bomb)
    assert before == Image.MAX_IMAGE_PIXELS


def test_pixel_and_byte_limits_are_per_call() -> None:
    with pytest.raises(ImageTooLargeError, match="512x512"):
        load_image(CXR, ImageLimits(max_pixels=100_000))
    with pytest.raises(ImageTooLargeError, match="bytes"):
        load_image(CXR, ImageLimits(max_bytes=10_000))
    with pytest.raises(ImageTooLargeError, match="1 frame"):
        load_image(DICOM, ImageLimits(max_pixels=1000))
    assert load_image(CXR).size == (512, 512)  # the default limits still allow it


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    photo = Image.open(JPEG)
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    rotated = tmp_path / "phone.jpg"
    photo.save(rotated, format="JPEG", exif=exif, quality=95)
    loaded = load_image(rotated)
    assert loaded.size == (67, 100)
    assert any("EXIF orientation 6" in n for n in loaded.notes)
    expected = np.asarray(Image.open(rotated).transpose(Image.Transpose.ROTATE_270).convert("RGB"), dtype=float)
    assert np.abs(np.asarray(loaded.image, dtype=float) - expected).mean() < 1.0


def _sixteen_bit_xray(low: int, high: int) -> np.ndarray:
    grey = np.asarray(Image.open(CXR).convert("L")).astype(np.float64)
    return (low + grey / 255.0 * (high - low)).astype(np.uint16)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_scans_are_windowed_not_truncated(tmp_path: Path, fmt: str) -> None:
    # A detector that used only 1,000..5,000 of 65,535 levels: naive conversion would be black.
    raw = _sixteen_bit_xray(1000, 5000)
    path = tmp_path / f"scan16.{fmt.lower()}"
    Image.fromarray(raw).save(path, format=fmt)
    assert Image.open(path).mode.startswith("I;16")
    loaded = load_image(path)
    grey = np.asarray(loaded.image)[..., 0].astype(float)
    assert grey.min() == 0 and grey.max() == 255
    assert np.corrcoef(grey.ravel(), raw.astype(float).ravel())[0, 1] > 0.99
    assert any("8-bit" in note for note in loaded.notes)


def test_tiff_and_webp_photos_load(tmp_path: Path) -> None:
    photo = Image.open(JPEG)
    for fmt in ("TIFF", "WEBP"):
        path = tmp_path / f"photo.{fmt.lower()}"
        photo.save(path, format=fmt)
        loaded = load_image(path)
        assert loaded.format == fmt.lower()
        assert loaded.size == (100, 67)
        assert np.abs(np.asarray(loaded.image, dtype=float) - np.asarray(photo, dtype=float)).mean() < 12


def test_16_bit_dicom_applies_rescale_window_and_monochrome1(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM)
    ds.decompress()
    stored = (np.asarray(ds.pixel_array, dtype=np.uint16) * 16)[:256, :256]  # 12-bit values
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    ds.WindowCenter, ds.WindowWidth = 1500, 3000
    ds.PixelData = stored.tobytes()
    path = tmp_path / "mono1.dcm"
    ds.save_as(path, enforce_file_format=True)

    loaded = load_image(path)
    values = stored.astype(float) * 2 - 1024
    expected = 255 - np.rint(np.clip((values - 0) / 3000, 0, 1) * 255)
    assert np.abs(np.asarray(loaded.image)[..., 0].astype(float) - expected).max() <= 1
    assert any("MONOCHROME1 inverted" in n for n in loaded.notes)
    assert any("slope 2" in n for n in loaded.notes)


def test_dicom_without_pixels_is_not_an_image(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM)
    del ds.PixelData
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(UnsupportedImageError, match="no pixel data"):
        load_image(path)


def test_sniffing_and_decoding_from_bytes() -> None:
    assert sniff_format(CXR.read_bytes()[:132]) == "png"
    assert sniff_format(DICOM.read_bytes()[:132]) == "dicom"
    assert sniff_format(b"GIF89a") is None
    assert decode_image(JPEG.read_bytes(), "upload").source == "upload"


async def test_async_loading_gives_the_same_image() -> None:
    loaded = await load_image_async(DICOM)
    assert loaded.sha256 == load_image(DICOM).sha256
