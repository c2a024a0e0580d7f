"""Image uploads: checked to be an image, stored under the session's directory with a random name.

The patient's file name is kept only as a label; the stored name is random so nothing a client
sends picks a path. A file that is not a readable image (by its bytes, not its declared type) is
refused and nothing is kept.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from fastapi import UploadFile
from PIL import Image, UnidentifiedImageError

from previsit.service.problems import Problem

CHUNK = 1024 * 1024
_MAGIC: list[tuple[bytes, str, str]] = [
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (b"\xff\xd8\xff", "jpg", "image/jpeg"),
    (b"GIF87a", "gif", "image/gif"),
    (b"GIF89a", "gif", "image/gif"),
]


def sniff(head: bytes) -> tuple[str, str] | None:
    """(extension, media type) from a file's first bytes, or None when it is no image we take."""
    for magic, ext, media in _MAGIC:
        if head.startswith(magic):
            return ext, media
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp", "image/webp"
    if head[128:132] == b"DICM":
        return "dcm", "application/dicom"
    return None


def _check_pixels(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()


class StoredUpload:
    def __init__(self, path: Path, size: int, media_type: str) -> None:
        self.path = path
        self.size = size
        self.media_type = media_type


async def store_image(upload: UploadFile, directory: Path, limit: int) -> StoredUpload:
    """Copy an uploaded image into `directory` under a random name; 413/422 problems, nothing kept."""
    head = await upload.read(1024)
    kind = sniff(head)
    if kind is None:
        raise Problem(
            422, "The file is not an image previsit can take (PNG, JPEG, GIF, WebP or DICOM).", kind="not-an-image"
        )
    ext, media = kind
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
        if ext != "dcm":
            try:
                await asyncio.to_thread(_check_pixels, partial)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                raise Problem(422, "The image file is damaged and cannot be read.", kind="bad-image") from exc
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return StoredUpload(target, size, media)
