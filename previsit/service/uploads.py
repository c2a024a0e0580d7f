"""Image uploads: checked to be an image, stored under the session's directory with a random name.

The patient's file name is kept only as a label; the stored name is random so nothing a client
sends picks a path. A file that is not a readable image (by its bytes, not its declared type) is
refused and nothing is kept.
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
from pathlib import Path

from fastapi import UploadFile

from previsit.service.problems import Problem
from tools.imaging.errors import ImageInputError
from tools.imaging.load import SUPPORTED, ImageLimits, load_image, sniff_format

CHUNK = 1024 * 1024
MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
    "webp": "image/webp",
    "dicom": "application/dicom",
}


def _check_readable(path: Path, limit: int) -> None:
    """Decode the whole file as the triage will (DICOM included); raises `ImageInputError`."""
    load_image(path, ImageLimits(max_bytes=limit))


def render_png(path: Path) -> bytes:
    """A stored image as PNG (how a browser shows a DICOM file)."""
    buffer = io.BytesIO()
    load_image(path).image.save(buffer, format="PNG")
    return buffer.getvalue()


class StoredUpload:
    def __init__(self, path: Path, size: int, media_type: str) -> None:
        self.path = path
        self.size = size
        self.media_type = media_type


async def store_image(upload: UploadFile, directory: Path, limit: int) -> StoredUpload:
    """Copy an uploaded image into `directory` under a random name; 413/422 problems, nothing kept."""
    head = await upload.read(1024)
    fmt = sniff_format(head[:132])
    if fmt is None:
        raise Problem(422, f"The file is not an image previsit can take ({SUPPORTED}).", kind="not-an-image")
    ext, media = fmt, MEDIA_TYPES[fmt]
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    target = directory / f"{secrets.token_hex(16)}.{ext}"
    partial = target.with_suffix(".part")
    size = 0
    try:
        with partial.open("wb") as handle:
            chunk = head
            while chunk:
                size += len(chunk)
                if size > limit:
                    raise Problem(413, f"The image is larger than the limit of {limit} bytes.")
                handle.write(chunk)
                chunk = await upload.read(CHUNK)
        try:
            await asyncio.to_thread(_check_readable, partial, limit)
        except ImageInputError as exc:
            raise Problem(422, "The image file is damaged and cannot be read.", kind="bad-image") from exc
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return StoredUpload(target, size, media)
