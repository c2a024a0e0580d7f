"""Pulling one string field's text out of a JSON reply while it is being written.

Backends stream raw model text, which is JSON under schema-constrained decoding (possibly after
a thinking block). A patient-facing stream wants only the question itself, decoded, as it grows:
`JsonFieldStream` re-reads the text received so far at each delta (replies are a few hundred
characters), decodes the field's string up to the last complete escape, and passes on only what
is new. It never emits thinking text or JSON syntax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

_THINKING_OPEN = "<unused94>"
_THINKING_CLOSE = "<unused95>"


def _partial_json_string(body: str) -> tuple[str, bool]:
    """Decode the JSON string content `body` (no opening quote) up to its end or its closing quote.

    Returns (decoded text, closed). An escape cut off at the end is held back.
    """
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == '"':
            return "".join(out), True
        if char != "\\":
            out.append(char)
            index += 1
            continue
        if index + 1 >= len(body):
            break
        code = body[index + 1]
        if code == "u":
            digits = body[index + 2 : index + 6]
            if len(digits) < 4:
                break
            try:
                out.append(json.loads(f'"\\u{digits}"'))
            except ValueError:
                out.append("\ufffd")
            index += 6
            continue
        out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(code, code))
        index += 2
    return "".join(out), False


class JsonFieldStream:
    """Feed raw deltas; `on_text` receives the decoded growth of one top-level string field."""

    def __init__(self, field: str, on_text: Callable[[str], None]) -> None:
        self._pattern = re.compile(r'"' + re.escape(field) + r'"\s*:\s*"')
        self._on_text = on_text
        self._raw: list[str] = []
        self._emitted = ""
        self.closed = False

    @property
    def text(self) -> str:
        """The field's text streamed so far."""
        return self._emitted

    def _answer_part(self) -> str | None:
        raw = "".join(self._raw)
        stripped = raw.lstrip()
        if stripped.startswith(_THINKING_OPEN) or (stripped and _THINKING_OPEN.startswith(stripped)):
            end = raw.find(_THINKING_CLOSE)
            return None if end < 0 else raw[end + len(_THINKING_CLOSE) :]
        return raw

    def feed(self, delta: str) -> None:
        if self.closed or not delta:
            return
        self._raw.append(delta)
        answer = self._answer_part()
        if answer is None:
            return
        match = self._pattern.search(answer)
        if match is None:
            return
        decoded, self.closed = _partial_json_string(answer[match.end() :])
        if len(decoded) > len(self._emitted) and decoded.startswith(self._emitted):
            new = decoded[len(self._emitted) :]
            self._emitted = decoded
            self._on_text(new)
