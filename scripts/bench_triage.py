"""Image triage throughput: images per second with and without cached label embeddings, batch sizes 1/8/32.

No MedSigLIP weights can be downloaded here, so the model is a random SigLIP written to a temporary
folder and loaded through the same `from_pretrained` path as `google/medsiglip-448`:

* `--shape tiny` (default): the test model (32 px, 2 layers). Measures the pipeline's overhead
  (processor, batching, caching), not a real model's cost.
* `--shape medsiglip`: the real medsiglip-448 shape (SigLIP so400m towers, 448 px, patch 14,
  27 layers, width 1152). Random weights, but the compute per image and per label prompt is the
  real one, so these are the honest numbers (slow on a CPU: use few images).

Also prints image decoding rates (PNG, JPEG, compressed DICOM) from fixtures/images.

    python scripts/bench_triage.py
    python scripts/bench_triage.py --shape medsiglip --images 8 --batch-sizes 1 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "fixtures" / "images"
FILES = ["cxr_nih_00000001_000_cardiomegaly.png", "small_rgb.jpeg", "encapsulated_cxr.dcm"]


def _decode_rates(repeats: int) -> None:
    from tools.imaging.load import load_image

    print("decode (load_image: sniff, decode, normalise to 8-bit RGB):")
    for name in FILES:
        path = IMAGES / name
        load_image(path)
        start = time.perf_counter()
        for _ in range(repeats):
            image = load_image(path)
        elapsed = time.perf_counter() - start
        print(f"  {name:<42} {image.size[0]}x{image.size[1]:<5} {repeats / elapsed:8.1f} images/s")


def _rate(images_per_s: float) -> str:
    return f"{images_per_s:8.3g} im/s ({1 / images_per_s:6.3g} s/im)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["tiny", "medsiglip"], default="tiny")
    parser.add_argument("--images", type=int, default=64, help="images triaged per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--modality", default="chest_xray")
    args = parser.parse_args()

    import torch

    from tools.imaging.load import load_image
    from tools.imaging.tiny_siglip import medsiglip_shaped_config, tiny_siglip_config, write_tiny_siglip
    from tools.imaging.triage import SiglipTriager

    _decode_rates(20 if args.shape == "tiny" else 5)
    with tempfile.TemporaryDirectory() as tmp:
        config = medsiglip_shaped_config() if args.shape == "medsiglip" else tiny_siglip_config()
        started = time.perf_counter()
        folder = write_tiny_siglip(Path(tmp) / "siglip", config=config)
        triager = SiglipTriager.load(str(folder), device=args.device, local_files_only=True)
        built = time.perf_counter() - started
        params = sum(p.numel() for p in triager._model.parameters())
        label_set = triager.label_sets[args.modality]
        what = (
            "TINY random SigLIP (test model: pipeline overhead only, not a real model's cost)"
            if args.shape == "tiny"
            else "random SigLIP in the real medsiglip-448 shape (so400m towers, 448 px)"
        )
        print(f"\nmodel: {what}")
        print(
            f"  {params / 1e6:.1f} M parameters, device {triager.device}, torch threads {torch.get_num_threads()}, "
            f"built+saved+loaded in {built:.1f} s"
        )
        print(f"  label set {label_set.name} v{label_set.version}: {len(label_set.labels)} prompts")
        pool = [load_image(IMAGES / name) for name in FILES]
        images = [pool[i % len(pool)] for i in range(args.images)]

        print(f"\ntriage of {args.images} images ({', '.join(FILES)} in turn), modality given:")
        print(f"  {'batch':>5}  {'cached labels':>24}  {'no label cache':>24}  speed-up")
        for batch in args.batch_sizes:
            triager.batch_size = batch
            rates: dict[bool, float] = {}
            for cached in (True, False):
                triager.cache_text = cached
                triager._text_cache.clear()
                # Warm the kernels (and, when caching, the label cache): the measurement is steady state.
                triager.triage_sync(images[:1], args.modality)
                start = time.perf_counter()
                for offset in range(0, len(images), batch):
                    triager.triage_sync(images[offset : offset + batch], args.modality)
                rates[cached] = len(images) / (time.perf_counter() - start)
            speed_up = rates[True] / rates[False]
            print(f"  {batch:>5}  {_rate(rates[True])}  {_rate(rates[False])}  {speed_up:6.2f}x")
        triager.cache_text = True
        largest = max(args.batch_sizes)
        triager.batch_size = largest
        start = time.perf_counter()
        triager.triage_sync(images[:largest], None)
        detect_rate = min(len(images), largest) / (time.perf_counter() - start)
        print(f"\nwith modality detection (one extra prompt set, cached): {_rate(detect_rate)} at batch {largest}")
        print("(no label cache = the label prompts go through the text tower on every call, once per batch)")


if __name__ == "__main__":
    main()
