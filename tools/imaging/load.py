"""Reading a patient's image file into an 8-bit RGB picture a model can look at, or a typed error.

Patients upload whatever their phone or their hospital portal gives them: photos with EXIF
rotation, 16-bit TIFF scans, DICOM exports with compressed pixel data, or a file that is not an
image at all. The format is decided from the first bytes (a file name proves nothing), the size
is checked from the header before anything is decoded (so a small file that declares a huge
picture is refused before it can take the memory), and every failure is an `ImageInputError`
subclass whose message names the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from tools.imaging.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageInputError,
    ImageTooLargeError,
    UnsupportedImageError,
)

ImageFormat = Literal["png", "jpeg", "tiff", "webp", "dicom"]
SUPPORTED = "PNG, JPEG, TIFF, WebP or DICOM"
_PIL_FORMATS: dict[ImageFormat, str] = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "webp": "WEBP"}
_EXIF_ORIENTATION = 0x0112
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) as written in little-endian DICOM
PERCENTILE_WINDOW = (0.5, 99.5)
"""Without a stored window, high-bit-depth pixels are stretched between these percentiles: a few
saturated or dead pixels must not flatten the whole picture to grey."""


class ImageLimits(BaseModel):
    """What one upload may cost. Checked per call; Pillow's process-wide limit is never changed."""

    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(default=50 * 1024 * 1024, gt=0, description="File size limit.")
    max_pixels: int = Field(default=50_000_000, gt=0, description="Width x height (x frames) limit.")


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image, normalised to 8-bit RGB, with where it came from."""

    image: Image.Image
    format: ImageFormat
    sha256: str
    source: str
    notes: list[str] = field(default_factory=list)
    """How the pixels were transformed (windowing, inversion, rotation), for provenance."""
    dicom_modality: str | None = None
    dicom_body_part: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def sniff_format(head: bytes) -> ImageFormat | None:
    """The format the first bytes declare, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    return None


def _to_uint8(pixels: NDArray[Any], window: tuple[float, float] | None = None) -> tuple[NDArray[np.uint8], str]:
    """Linear window to 0..255: the given (low, high), else the percentile window of the data."""
    data = pixels.astype(np.float64)
    if window is None:
        low, high = (float(v) for v in np.percentile(data, PERCENTILE_WINDOW))
        how = f"percentile window {PERCENTILE_WINDOW[0]}-{PERCENTILE_WINDOW[1]}"
    else:
        low, high = window
        how = f"window {low:g}..{high:g}"
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8), f"{how} (flat image)"
    scaled = np.clip((data - low) / (high - low), 0.0, 1.0) * 255.0
    return np.rint(scaled).astype(np.uint8), how


def _normalise_pil(image: Image.Image, notes: list[str]) -> Image.Image:
    """Any Pillow mode to RGB 8-bit; high-bit-depth grey is windowed, not truncated."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey, how = _to_uint8(np.asarray(image))
        notes.append(f"{image.mode} pixels scaled to 8-bit ({how})")
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        notes.append("transparency flattened onto white")
        return flat
    if image.mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _decode_pil(data: bytes, fmt: ImageFormat, name: str, limits: ImageLimits) -> LoadedImage:
    notes: list[str] = []
    try:
        image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
        width, height = image.size
        frames = getattr(image, "n_frames", 1)
        if width * height > limits.max_pixels:
            raise ImageTooLargeError(
                f"{name}: the image declares {width}x{height} pixels, more than the limit of "
                f"{limits.max_pixels:,}; refused before decoding"
            )
        if frames > 1:
            notes.append(f"first of {frames} frames used")
        image.load()
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        upright = ImageOps.exif_transpose(image)
        if orientation not in (None, 1):
            notes.append(f"EXIF orientation {orientation} applied")
        rgb = _normalise_pil(upright, notes)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: refused as a decompression bomb ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImageError(f"{name}: the {fmt.upper()} file is damaged or truncated ({exc})") from exc
    return LoadedImage(image=rgb, format=fmt, sha256=hashlib.sha256(data).hexdigest(), source=name, notes=notes)


def _dicom_window(ds: Any) -> tuple[float, float] | None:
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        return None
    first_centre = float(centre[0] if _is_multi(centre) else centre)
    first_width = float(width[0] if _is_multi(width) else width)
    if first_width <= 1:
        return None
    return first_centre - first_width / 2, first_centre + first_width / 2


def _is_multi(value: Any) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def _decode_dicom(data: bytes, name: str, limits: ImageLimits) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    notes: list[str] = []
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptImageError(f"{name}: the DICOM file cannot be read ({exc})") from exc
    if "PixelData" not in ds:
        if _PIXEL_DATA_TAG in data:  # the element began but the file ends inside it
            raise CorruptImageError(f"{name}: the DICOM file is truncated inside its pixel data")
        raise UnsupportedImageError(f"{name}: the DICOM file holds no image (no pixel data)")
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows * columns * frames > limits.max_pixels:
        raise ImageTooLargeError(
            f"{name}: the DICOM image declares {frames} frame(s) of {columns}x{rows} pixels, more than the limit "
            f"of {limits.max_pixels:,}; refused before decoding"
        )
    try:
        from pydicom.pixels.processing import apply_modality_lut

        pixels = ds.pixel_array
        if frames > 1:
            pixels = pixels[0]
            notes.append(f"first of {frames} frames used")
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        if int(ds.get("SamplesPerPixel", 1)) == 1:
            values = apply_modality_lut(pixels, ds)
            rescaled = ds.get("RescaleSlope") is not None or ds.get("RescaleIntercept") is not None
            if rescaled:
                notes.append(f"rescaled (slope {ds.get('RescaleSlope', 1)}, intercept {ds.get('RescaleIntercept', 0)})")
            window = _dicom_window(ds)
            if window is None and pixels.dtype == np.uint8 and not rescaled:
                grey, how = np.asarray(values).astype(np.uint8), "8-bit as stored"
            else:
                grey, how = _to_uint8(np.asarray(values), window)
            notes.append(f"DICOM {photometric}, {how}")
            if photometric == "MONOCHROME1":
                grey = 255 - grey
                notes.append("MONOCHROME1 inverted so that air is dark")
            image = Image.fromarray(grey, mode="L").convert("RGB")
        else:
            rgb = np.asarray(pixels)
            if rgb.dtype != np.uint8:
                rgb, how = _to_uint8(rgb)
                notes.append(f"colour DICOM scaled to 8-bit ({how})")
            image = Image.fromarray(rgb, mode="RGB")
    except ImageInputError:
        raise
    except (RuntimeError, ValueError, NotImplementedError, AttributeError, TypeError, KeyError, OSError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = f" (transfer syntax {syntax.name})" if syntax is not None else ""
        raise CorruptImageError(f"{name}: the DICOM pixel data cannot be decoded{what}: {exc}") from exc
    return LoadedImage(
        image=image,
        format="dicom",
        sha256=hashlib.sha256(data).hexdigest(),
        source=name,
        notes=notes,
        dicom_modality=str(ds.get("Modality", "")) or None,
        dicom_body_part=str(ds.get("BodyPartExamined", "")) or None,
    )


def decode_image(data: bytes, name: str = "image", limits: ImageLimits | None = None) -> LoadedImage:
    """Decode image bytes (format sniffed from the content) to 8-bit RGB; raises `ImageInputError`."""
    limits = limits or ImageLimits()
    if not data:
        raise EmptyImageError(f"{name}: the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"{name}: {len(data):,} bytes, more than the limit of {limits.max_bytes:,}")
    fmt = sniff_format(data[:132])
    if fmt is None:
        raise UnsupportedImageError(f"{name}: not a supported image (expected {SUPPORTED}; judged by content)")
    if fmt == "dicom":
        return _decode_dicom(data, name, limits)
    return _decode_pil(data, fmt, name, limits)


def load_image(path: str | Path, limits: ImageLimits | None = None) -> LoadedImage:
    """Read and decode one image file; raises `ImageInputError` naming the file."""
    file = Path(path)
    limits = limits or ImageLimits()
    try:
        size = file.stat().st_size
        if size > limits.max_bytes:
            raise ImageTooLargeError(f"{file.name}: {size:,} bytes, more than the limit of {limits.max_bytes:,}")
        data = file.read_bytes()
    except FileNotFoundError as exc:
        raise ImageInputError(f"{file.name}: no such file ({file})") from exc
    except IsADirectoryError as exc:
        raise ImageInputError(f"{file.name}: is a directory, not an image file") from exc
    except OSError as exc:
        raise ImageInputError(f"{file.name}: cannot be read ({exc.strerror or exc})") from exc
    return decode_image(data, file.name, limits)


async def load_image_async(path: str | Path, limits: ImageLimits | None = None) -> LoadedImage:
    """`load_image` off the event loop (decoding a large scan takes a while)."""
    return await asyncio.to_thread(load_image, path, limits)
