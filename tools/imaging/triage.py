"""Zero-shot image triage with MedSigLIP: per-label sigmoid scores a clinician reads as a signal.

SigLIP was trained with a sigmoid loss: each (image, text) pair gets an independent probability,
so a chest X-ray can score high for both cardiomegaly and effusion. Scores are therefore never
softmaxed across labels. Label prompts change rarely and images often, so a label set's text
embeddings are computed once per (model, label-set content hash) and kept in the triager
instance; images go through the vision tower in batches. The result is worded for the clinician
as a triage signal, never a diagnosis, and the intake never shows it to the patient.

Modality, when the caller does not give one, comes from DICOM tags when they are unambiguous
(CR/DX chest, OP fundus, SM slide), else from the same model scoring the label sets' modality
prompts (the best-scoring one wins; its scores are kept with the result).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, Field

from tools.imaging.errors import ImageModelUnavailableError, LabelSetError, TriageError
from tools.imaging.labels import LabelSet, load_label_sets
from tools.imaging.load import LoadedImage

if TYPE_CHECKING:
    import torch

DEFAULT_IMAGE_MODEL = "google/medsiglip-448"
MODALITY_SET = "__modality__"
SIGNAL_PREFIX = "Image triage signal (not a diagnosis)"
ModalityMethod = Literal["caller", "dicom_tags", "model"]


class LabelProbability(BaseModel):
    label: str
    display: str
    probability: float = Field(ge=0, le=1)


class LabelSetRef(BaseModel):
    """Which label set produced a result: enough to reproduce it."""

    name: str
    version: str
    content_hash: str


class TriageResult(BaseModel):
    """The triage of one image, for the clinician only."""

    model_id: str
    label_set: LabelSetRef
    modality: str
    modality_detected: bool = Field(description="True when the modality was inferred, not given by the caller.")
    modality_method: ModalityMethod = "caller"
    modality_scores: dict[str, float] = Field(default_factory=dict, description="Detection scores per modality.")
    probabilities: list[LabelProbability] = Field(description="Independent sigmoid scores, highest first.")
    low_confidence: bool = Field(description="The highest score is below the label set's threshold.")
    ambiguous: bool = Field(description="The two highest scores are within the label set's margin.")

    @property
    def top(self) -> LabelProbability:
        return self.probabilities[0]

    def signal_text(self, shown: int = 3) -> str:
        """One line for the clinician: the top scores, the label set, the model, the caveats."""
        scores = ", ".join(f"{p.display} {p.probability:.2f}" for p in self.probabilities[:shown])
        how = "detected" if self.modality_detected else "given"
        caveats = [c for c, on in (("low confidence", self.low_confidence), ("ambiguous", self.ambiguous)) if on]
        tail = f"; {' and '.join(caveats)}" if caveats else ""
        return (
            f"{SIGNAL_PREFIX}: {self.modality.replace('_', ' ')} ({how}); highest independent scores: {scores} "
            f"(label set {self.label_set.name} v{self.label_set.version}, model {self.model_id}{tail})"
        )


class ImageTriager(Protocol):
    """Anything that turns loaded images into triage results (MedSigLIP here; a service elsewhere)."""

    @property
    def model_id(self) -> str: ...

    async def triage(self, images: Sequence[LoadedImage], modality: str | None = None) -> list[TriageResult]:
        """One result per image, in order; raises `TriageError`."""
        ...


def _dicom_modality(image: LoadedImage) -> str | None:
    kind = (image.dicom_modality or "").upper()
    part = (image.dicom_body_part or "").upper()
    if kind in ("CR", "DX") and part in ("CHEST", "THORAX"):
        return "chest_xray"
    if kind == "OP":
        return "ophthalmology_fundus"
    if kind == "SM":
        return "histopathology"
    return None


def _pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_siglip(model_id: str, *, device: str | None = None, local_files_only: bool = False) -> tuple[Any, Any]:
    """Model and processor through `AutoModel` / `AutoProcessor`, the Pillow image processor when torchvision
    is absent. Raises `ImageModelUnavailableError` saying what to download and where."""
    from transformers import AutoModel, AutoProcessor
    from transformers.utils.import_utils import is_torchvision_available

    backend = "torchvision" if is_torchvision_available() else "pil"
    try:
        processor = AutoProcessor.from_pretrained(  # type: ignore[no-untyped-call]
            model_id, backend=backend, local_files_only=local_files_only
        )
        model = AutoModel.from_pretrained(model_id, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        local = Path(model_id).expanduser()
        where = (
            f"the folder {local} has no usable SigLIP weights/processor files"
            if local.exists()
            else f"{model_id!r} is not a local folder and the Hugging Face Hub cannot be reached (or the id is wrong)"
        )
        raise ImageModelUnavailableError(
            f"cannot load image triage model {model_id!r}: {where}. On a machine with network access, accept the "
            f"licence at https://huggingface.co/{DEFAULT_IMAGE_MODEL} and run `huggingface-cli download "
            f"{DEFAULT_IMAGE_MODEL} --local-dir <folder>`, then pass that folder with --image-model or "
            f"PREVISIT_IMAGE_MODEL (or copy the Hub cache into HF_HOME). Detail: {str(exc).splitlines()[0][:200]}"
        ) from exc
    except MemoryError as exc:  # pragma: no cover - depends on the machine
        raise ImageModelUnavailableError(f"not enough memory to load {model_id!r}") from exc
    model.to(_pick_device(device)).eval()
    return model, processor


def _pooled(output: Any) -> torch.Tensor:
    """Feature tensors across transformers versions (a tensor, or an output with `pooler_output`)."""
    import torch

    pooled: torch.Tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return pooled


class SiglipTriager:
    """MedSigLIP (or any SigLIP) zero-shot triage with cached label embeddings and batched images."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        model_id: str,
        label_sets: dict[str, LabelSet],
        *,
        batch_size: int = 8,
        cache_text: bool = True,
    ) -> None:
        if not label_sets:
            raise TriageError("an image triager needs at least one label set")
        self._model = model
        self._processor = processor
        self._model_id = model_id
        self.label_sets = dict(label_sets)
        self.batch_size = max(1, batch_size)
        self.cache_text = cache_text
        self._text_cache: dict[tuple[str, str], torch.Tensor] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def load(
        cls,
        model_id: str = DEFAULT_IMAGE_MODEL,
        *,
        label_dir: str | Path | None = None,
        device: str | None = None,
        batch_size: int = 8,
        local_files_only: bool = False,
    ) -> SiglipTriager:
        """Load the model and the label sets (the shipped ones, or a clinic's folder)."""
        label_sets = load_label_sets(label_dir)
        model, processor = load_siglip(model_id, device=device, local_files_only=local_files_only)
        return cls(model, processor, model_id, label_sets, batch_size=batch_size)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def device(self) -> Any:
        return next(self._model.parameters()).device

    def _modality_prompts(self) -> tuple[list[str], list[str], str]:
        names = sorted(self.label_sets)
        prompts = [self.label_sets[n].modality_prompt for n in names]
        return names, prompts, "|".join(f"{n}={self.label_sets[n].content_hash}" for n in names)

    def _text_embeddings(self, key: str, content_hash: str, prompts: list[str]) -> torch.Tensor:
        """Normalised text embeddings of `prompts`, computed once per (model, content hash)."""
        import torch

        cache_key = (self._model_id, f"{key}:{content_hash}")
        cached = self._text_cache.get(cache_key)
        if cached is not None:
            return cached
        inputs = self._processor(text=prompts, padding="max_length", truncation=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            embeds = _pooled(self._model.get_text_features(**inputs))
        normalised: torch.Tensor = embeds / embeds.norm(p=2, dim=-1, keepdim=True)
        if self.cache_text:
            self._text_cache[cache_key] = normalised
        return normalised

    def _image_embeddings(self, images: Sequence[LoadedImage]) -> torch.Tensor:
        import torch

        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = [i.image for i in images[start : start + self.batch_size]]
            pixels = self._processor(images=batch, return_tensors="pt")["pixel_values"]
            dtype = next(self._model.parameters()).dtype
            with torch.inference_mode():
                embeds = _pooled(self._model.get_image_features(pixel_values=pixels.to(self.device, dtype)))
            chunks.append(embeds / embeds.norm(p=2, dim=-1, keepdim=True))
        return torch.cat(chunks)

    def _sigmoid_scores(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> list[list[float]]:
        """SigLIP's logits_per_image (scaled cosine + bias), each through its own sigmoid."""
        import torch

        with torch.inference_mode():
            scale = self._model.logit_scale.exp()
            logits = image_embeds @ text_embeds.to(image_embeds.dtype).t() * scale + self._model.logit_bias
            scores: list[list[float]] = torch.sigmoid(logits.float()).cpu().tolist()
        return scores

    def _detect(self, image_embeds: torch.Tensor) -> list[tuple[str, dict[str, float]]]:
        names, prompts, content_hash = self._modality_prompts()
        text = self._text_embeddings(MODALITY_SET, content_hash, prompts)
        guesses = []
        for row in self._sigmoid_scores(image_embeds, text):
            scores = dict(zip(names, row, strict=True))
            guesses.append((max(names, key=lambda n: scores[n]), scores))
        return guesses

    def _result(
        self, label_set: LabelSet, scores: list[float], modality_how: tuple[bool, ModalityMethod, dict[str, float]]
    ) -> TriageResult:
        detected, method, modality_scores = modality_how
        probabilities = sorted(
            (
                LabelProbability(label=label.id, display=label.display, probability=min(1.0, max(0.0, p)))
                for label, p in zip(label_set.labels, scores, strict=True)
            ),
            key=lambda p: -p.probability,
        )
        top = probabilities[0].probability
        second = probabilities[1].probability if len(probabilities) > 1 else 0.0
        return TriageResult(
            model_id=self._model_id,
            label_set=LabelSetRef(name=label_set.name, version=label_set.version, content_hash=label_set.content_hash),
            modality=label_set.name,
            modality_detected=detected,
            modality_method=method,
            modality_scores=modality_scores,
            probabilities=probabilities,
            low_confidence=top < label_set.low_confidence_below,
            ambiguous=len(probabilities) > 1 and top - second < label_set.ambiguous_margin,
        )

    def triage_sync(self, images: Sequence[LoadedImage], modality: str | None = None) -> list[TriageResult]:
        """The blocking triage (benchmarks call it directly; the graph uses `triage`)."""
        if modality is not None and modality not in self.label_sets:
            raise TriageError(
                f"no label set for modality {modality!r}; available: {', '.join(sorted(self.label_sets))}"
            )
        if not images:
            return []
        try:
            image_embeds = self._image_embeddings(images)
            how: list[tuple[bool, ModalityMethod, dict[str, float]]] = []
            needs_model = [i for i, image in enumerate(images) if modality is None and _dicom_modality(image) is None]
            detected = (
                dict(zip(needs_model, self._detect(image_embeds[needs_model]), strict=True)) if needs_model else {}
            )
            chosen: list[str] = []
            for index, image in enumerate(images):
                if modality is not None:
                    chosen.append(modality)
                    how.append((False, "caller", {}))
                elif (tagged := _dicom_modality(image)) is not None and tagged in self.label_sets:
                    chosen.append(tagged)
                    how.append((True, "dicom_tags", {}))
                else:
                    name, scores = detected[index] if index in detected else self._detect(image_embeds[[index]])[0]
                    chosen.append(name)
                    how.append((True, "model", scores))
            results: list[TriageResult | None] = [None] * len(images)
            for name in dict.fromkeys(chosen):
                label_set = self.label_sets[name]
                text = self._text_embeddings(name, label_set.content_hash, [label.prompt for label in label_set.labels])
                rows = [i for i, c in enumerate(chosen) if c == name]
                for index, row in zip(rows, self._sigmoid_scores(image_embeds[rows], text), strict=True):
                    results[index] = self._result(label_set, row, how[index])
        except TriageError:
            raise
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise TriageError(f"image triage with {self._model_id} failed: {exc}") from exc
        return [r for r in results if r is not None]

    async def triage(self, images: Sequence[LoadedImage], modality: str | None = None) -> list[TriageResult]:
        async with self._lock:
            return await asyncio.to_thread(self.triage_sync, images, modality)


class LazyTriager:
    """Loads the real triager on first use: an intake without images never pays for the model, and a
    model that cannot load is reported once (through `on_unavailable`) and then fails fast."""

    def __init__(
        self, loader: Callable[[], ImageTriager], model_id: str, on_unavailable: Callable[[str], None] | None = None
    ) -> None:
        self._loader = loader
        self._model_id = model_id
        self._on_unavailable = on_unavailable
        self._triager: ImageTriager | None = None
        self._error: TriageError | None = None
        self._lock = asyncio.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    async def _get(self) -> ImageTriager:
        async with self._lock:
            if self._error is not None:
                raise self._error
            if self._triager is None:
                try:
                    self._triager = await asyncio.to_thread(self._loader)
                except (TriageError, LabelSetError) as exc:
                    error = exc if isinstance(exc, TriageError) else ImageModelUnavailableError(str(exc))
                    self._error = error
                    if self._on_unavailable is not None:
                        self._on_unavailable(str(error))
                    raise error from exc
            return self._triager

    async def triage(self, images: Sequence[LoadedImage], modality: str | None = None) -> list[TriageResult]:
        return await (await self._get()).triage(images, modality)
