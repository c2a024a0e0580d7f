"""MedSigLIP triage, run on a tiny random SigLIP loaded through the same from_pretrained path as the real id.

The tiny model's scores are random; what is specified here is how they are computed (SigLIP's
logits through independent sigmoids), cached, batched and reported, and how bad label files and
missing weights fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import FIXTURES
from tools.imaging.errors import ImageModelUnavailableError, LabelSetError, TriageError
from tools.imaging.labels import DEFAULT_LABEL_DIR, load_label_set, load_label_sets
from tools.imaging.load import LoadedImage, load_image
from tools.imaging.triage import LazyTriager, SiglipTriager, TriageResult, load_siglip

IMAGES = FIXTURES / "images"
CXR = load_image(IMAGES / "cxr_nih_00000001_000_cardiomegaly.png")
JPEG = load_image(IMAGES / "small_rgb.jpeg")
DICOM = load_image(IMAGES / "encapsulated_cxr.dcm")


@pytest.fixture
def triager(tiny_siglip_dir: Path) -> SiglipTriager:
    return SiglipTriager.load(str(tiny_siglip_dir), local_files_only=True)


def _count_text_tower_calls(triager: SiglipTriager) -> list[int]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    triager._model.text_model.register_forward_hook(hook)
    return calls


def test_loading_uses_the_pil_image_processor_without_torchvision(tiny_siglip_dir: Path) -> None:
    pytest.importorskip("transformers")
    from transformers.utils import is_torchvision_available

    _, processor = load_siglip(str(tiny_siglip_dir), local_files_only=True)
    expected = "SiglipImageProcessor" if is_torchvision_available() else "SiglipImageProcessorPil"
    assert type(processor.image_processor).__name__ == expected


def test_scores_are_independent_sigmoids_of_siglip_logits(triager: SiglipTriager) -> None:
    label_set = triager.label_sets["chest_xray"]
    [result] = triager.triage_sync([CXR], "chest_xray")
    prompts = [label.prompt for label in label_set.labels]
    inputs = triager._processor(text=prompts, images=[CXR.image], padding="max_length", return_tensors="pt")
    with torch.inference_mode():
        expected = torch.sigmoid(triager._model(**inputs).logits_per_image)[0].tolist()
    by_label = {p.label: p.probability for p in result.probabilities}
    for label, probability in zip(label_set.labels, expected, strict=True):
        assert by_label[label.id] == pytest.approx(probability, abs=1e-5)
    assert sum(by_label.values()) != pytest.approx(1.0, abs=1e-3)  # multi-label: no softmax
    assert [p.probability for p in result.probabilities] == sorted(by_label.values(), reverse=True)


def test_label_embeddings_are_computed_once_per_label_set(triager: SiglipTriager) -> None:
    calls = _count_text_tower_calls(triager)
    for _ in range(3):
        triager.triage_sync([CXR, JPEG], "chest_xray")
    assert calls[0] == 1
    triager.triage_sync([JPEG], "dermatology")
    assert calls[0] == 2
    triager.cache_text = False
    triager.triage_sync([JPEG], "dermatology")  # a cached set stays cached; only new sets are recomputed
    assert calls[0] == 2


def test_edited_label_set_gets_new_embeddings(triager: SiglipTriager) -> None:
    calls = _count_text_tower_calls(triager)
    triager.triage_sync([CXR], "chest_xray")
    edited = triager.label_sets["chest_xray"].model_copy(update={"version": "clinic-2"})
    triager.label_sets["chest_xray"] = edited
    [result] = triager.triage_sync([CXR], "chest_xray")
    assert calls[0] == 2
    assert result.label_set.version == "clinic-2"
    assert result.label_set.content_hash == edited.content_hash


def test_batching_gives_the_same_scores_as_one_by_one(triager: SiglipTriager) -> None:
    images = [CXR, JPEG, DICOM, CXR, JPEG]
    triager.batch_size = 2
    batched = triager.triage_sync(images, "chest_xray")
    single = [triager.triage_sync([image], "chest_xray")[0] for image in images]
    for one, many in zip(single, batched, strict=True):
        assert [p.label for p in one.probabilities] == [p.label for p in many.probabilities]
        for a, b in zip(one.probabilities, many.probabilities, strict=True):
            assert a.probability == pytest.approx(b.probability, abs=1e-5)


async def test_png_jpeg_and_dicom_files_triage_end_to_end(triager: SiglipTriager) -> None:
    paths = ["cxr_nih_00000001_000_cardiomegaly.png", "small_rgb.jpeg", "encapsulated_cxr.dcm"]
    images = [load_image(IMAGES / name) for name in paths]
    results = await triager.triage(images)
    assert len(results) == 3
    for result in results:
        assert isinstance(result, TriageResult)
        assert result.modality_detected and result.modality_method == "model"
        assert set(result.modality_scores) == set(triager.label_sets)
        assert result.modality == max(result.modality_scores, key=lambda m: result.modality_scores[m])
        assert result.model_id == triager.model_id
        assert len(result.probabilities) == len(triager.label_sets[result.modality].labels)


def test_unambiguous_dicom_tags_choose_the_modality() -> None:
    from tools.imaging.triage import _dicom_modality

    chest = LoadedImage(image=CXR.image, format="dicom", sha256="x", source="x", dicom_modality="DX",
                        dicom_body_part="CHEST")  # fmt: skip
    eye = LoadedImage(image=CXR.image, format="dicom", sha256="x", source="x", dicom_modality="CR",
                      dicom_body_part="EYE")  # fmt: skip
    assert _dicom_modality(chest) == "chest_xray"
    assert _dicom_modality(eye) is None  # CR of an eye: let the model decide


def test_signal_is_worded_for_the_clinician_as_not_a_diagnosis(triager: SiglipTriager) -> None:
    [result] = triager.triage_sync([CXR], "chest_xray")
    text = result.signal_text()
    assert text.startswith("Image triage signal (not a diagnosis): chest xray (given)")
    assert "chest_xray v2026.1" in text
    assert triager.model_id in text
    assert "diagnosis:" not in text.lower().replace("(not a diagnosis):", "")


def test_low_confidence_and_ambiguity_follow_the_label_file_thresholds(triager: SiglipTriager) -> None:
    [plain] = triager.triage_sync([CXR], "chest_xray")
    top = plain.probabilities[0].probability
    strict = triager.label_sets["chest_xray"].model_copy(
        update={"low_confidence_below": min(0.999, top + 0.01), "ambiguous_margin": 0.99}
    )
    triager.label_sets["chest_xray"] = strict
    [flagged] = triager.triage_sync([CXR], "chest_xray")
    assert flagged.low_confidence and flagged.ambiguous
    assert "low confidence and ambiguous" in flagged.signal_text()
    lenient = strict.model_copy(update={"low_confidence_below": 0.001, "ambiguous_margin": 0.0})
    triager.label_sets["chest_xray"] = lenient
    [clear] = triager.triage_sync([CXR], "chest_xray")
    assert not clear.low_confidence and not clear.ambiguous


def test_unknown_modality_is_a_triage_error(triager: SiglipTriager) -> None:
    with pytest.raises(TriageError, match="no label set for modality 'xray'; available: chest_xray"):
        triager.triage_sync([CXR], "xray")


def test_missing_weights_name_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(ImageModelUnavailableError, match="huggingface-cli download google/medsiglip-448"):
        SiglipTriager.load("google/medsiglip-448", local_files_only=True)
    with pytest.raises(ImageModelUnavailableError, match="has no usable SigLIP"):
        SiglipTriager.load(str(tmp_path), local_files_only=True)


async def test_lazy_triager_reports_an_unloadable_model_once() -> None:
    warnings: list[str] = []
    lazy = LazyTriager(
        lambda: SiglipTriager.load("google/medsiglip-448", local_files_only=True),
        "google/medsiglip-448",
        on_unavailable=warnings.append,
    )
    for _ in range(2):
        with pytest.raises(ImageModelUnavailableError):
            await lazy.triage([CXR])
    assert len(warnings) == 1


async def test_lazy_triager_loads_on_first_use(tiny_siglip_dir: Path) -> None:
    loads: list[int] = []

    def loader() -> SiglipTriager:
        loads.append(1)
        return SiglipTriager.load(str(tiny_siglip_dir), local_files_only=True)

    lazy = LazyTriager(loader, str(tiny_siglip_dir))
    assert loads == []
    await lazy.triage([CXR], "chest_xray")
    await lazy.triage([JPEG], "dermatology")
    assert loads == [1]


def test_shipped_label_sets_cover_the_four_modalities() -> None:
    sets = load_label_sets()
    assert set(sets) == {"chest_xray", "dermatology", "ophthalmology_fundus", "histopathology"}
    assert all(len(s.content_hash) == 16 for s in sets.values())


def test_a_clinic_label_folder_replaces_the_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "wound.yaml").write_text(
        "name: wound_photo\nversion: '1'\nmodality_prompt: a photo of a wound\n"
        "labels:\n  - {id: healing, display: Healing well, prompt: a photo of a healing wound}\n"
    )
    assert list(load_label_sets(tmp_path)) == ["wound_photo"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\nversion: '1'\nmodality_prompt: a photo\nlabels: []\n", "field 'labels'"),
        (
            "name: x\nversion: '1'\nmodality_prompt: a photo\nlabels:\n  - {id: a, display: A}\n",
            "field 'labels.0.prompt'",
        ),
        (
            "name: x\nversion: '1'\nmodality_prompt: a photo\nlabels:\n  - {id: a, display: A, prompt: p one}\n"
            "  - {id: a, display: B, prompt: p two}\n",
            "duplicate label ids: a",
        ),
        ("name: x\nversion: '1'\nmodality_prompt: a photo\nlow_confidence_below: 2\nlabels: []\n", "low_confidence"),
        ("name: [unclosed\n", "not valid YAML"),
        ("- just a list\n", "must be a mapping"),
    ],
)
def test_bad_label_files_are_named_with_the_field(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "clinic.yaml"
    bad.write_text(content)
    with pytest.raises(LabelSetError, match=r"clinic\.yaml") as error:
        load_label_set(bad)
    assert message in str(error.value)


def test_empty_or_missing_label_folders_are_errors(tmp_path: Path) -> None:
    with pytest.raises(LabelSetError, match="holds no label-set files"):
        load_label_sets(tmp_path)
    with pytest.raises(LabelSetError, match="no such label-set folder"):
        load_label_sets(tmp_path / "nope")
    assert DEFAULT_LABEL_DIR.is_dir()
