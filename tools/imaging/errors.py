"""Typed failures of image input and image triage.

The intake never stops for an image: callers catch `ImageInputError` (the file) and `TriageError`
(the model) and record them as flags, so each class carries a message a clinician can read.
"""

from __future__ import annotations


class ImageInputError(Exception):
    """An image file that cannot be used; the message names the file and what is wrong with it."""


class EmptyImageError(ImageInputError):
    """The file has no bytes."""


class UnsupportedImageError(ImageInputError):
    """The bytes are not a supported image format (checked by content, never by file name)."""


class CorruptImageError(ImageInputError):
    """The format was recognised but the file is damaged or truncated."""


class ImageTooLargeError(ImageInputError):
    """Too many bytes or pixels (decompression-bomb protection)."""


class TriageError(Exception):
    """The triage model could not produce a result for these images."""


class ImageModelUnavailableError(TriageError):
    """The triage model cannot be loaded; the message says what to download and where to put it."""


class LabelSetError(Exception):
    """A label-set file that cannot be used, with the file and the field named."""
