"""Named clinician credentials, so an approval or an edit is attributed to whoever's key made it.

The shared clinician key trusts the caller's `X-Clinician-Name` header for the name it records; a
named key is that name, whatever the header says. The keys file holds one `name: credential` per
line (`#` starts a comment). A credential is `sha256:<hex>`, which is what `previsit clinician-key`
writes (the key itself is printed once and never stored), or a plaintext key for quick set-ups.
Removing a line revokes that key at the next start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from pydantic import BaseModel, Field

_NAME = re.compile(r"^[^\s:#][^:#]{0,99}$")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
MIN_PLAINTEXT_KEY_CHARS = 16


class ClinicianKeysError(ValueError):
    """The keys file cannot be used; the message names the file and the line."""


class ClinicianKeys(BaseModel):
    """Clinician names and the SHA-256 digests of their keys."""

    digests: dict[str, str] = Field(default_factory=dict, description="Name to hex SHA-256 of the key.")

    def name_for(self, credential: str) -> str | None:
        """The clinician whose key this is, or None; every entry is compared, in constant time."""
        digest = _digest(credential)
        found: str | None = None
        for name, expected in self.digests.items():
            if hmac.compare_digest(digest, expected):
                found = name
        return found


def _usable_name(name: str) -> bool:
    return bool(_NAME.match(name)) and name.isprintable()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_clinician_keys(path: Path) -> ClinicianKeys:
    """Read a keys file; a malformed line, a duplicate name or a weak plaintext key is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClinicianKeysError(f"{path}: cannot read the clinician keys file ({exc.strerror or exc})") from exc
    digests: dict[str, str] = {}
    seen_digests: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, credential = (part.strip() for part in line.partition(":"))
        where = f"{path}:{number}"
        if not sep or not credential:
            raise ClinicianKeysError(f"{where}: expected 'name: sha256:<hex>' or 'name: <key>'")
        if not _usable_name(name):
            raise ClinicianKeysError(f"{where}: {name!r} is not a usable clinician name (1-100 characters, no ':')")
        if name in digests:
            raise ClinicianKeysError(f"{where}: {name!r} is listed twice")
        if credential.startswith("sha256:"):
            match = _DIGEST.match(credential)
            if match is None:
                raise ClinicianKeysError(f"{where}: a sha256 credential is 64 lowercase hex digits")
            digest = match.group(1)
        elif len(credential) < MIN_PLAINTEXT_KEY_CHARS:
            raise ClinicianKeysError(
                f"{where}: the key for {name!r} is shorter than {MIN_PLAINTEXT_KEY_CHARS} characters"
            )
        else:
            digest = _digest(credential)
        if digest in seen_digests:
            raise ClinicianKeysError(f"{where}: {name!r} has the same key as {seen_digests[digest]!r}")
        digests[name] = digest
        seen_digests[digest] = name
    return ClinicianKeys(digests=digests)


def add_clinician_key(path: Path, name: str) -> str:
    """Make a new key for `name`, append its digest to the file (created 0600) and return the key."""
    existing = load_clinician_keys(path) if path.exists() else ClinicianKeys()
    if not _usable_name(name):
        raise ClinicianKeysError(f"{name!r} is not a usable clinician name (1-100 characters, no ':' or '#')")
    if name in existing.digests:
        raise ClinicianKeysError(f"{path}: {name!r} already has a key; remove its line to revoke it first")
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(f"{name}: sha256:{_digest(key)}\n")
    return key
