"""What --face-enhance costs on top of a plain upscale, measured side by side in one run.

    PYTHONPATH=src python benchmarks/faces_cost.py [--photos Set5/HR/woman.png ...]

For each photo: the plain upscale (realesr-animevideov3-x4), then the same upscale with
face enhancement through a GFPGAN v1.4-shaped network (random weights: the official file
cannot be downloaded everywhere, and the cost does not depend on the weights), split into
detection, restoration per face and the rest. Prints one JSON row per photo and the ratio
enhanced / plain. Memory: faces are restored one at a time, so the extra peak is one
512x512 face pass whatever the number of faces (tests/test_faces.py checks the batches).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spandrel import ModelLoader  # noqa: E402
from spandrel.architectures.GFPGAN import GFPGAN  # noqa: E402

from upres.api import load  # noqa: E402
from upres.faces.detect import FaceDetector  # noqa: E402
from upres.faces.enhance import FaceEnhancer, FaceOptions  # noqa: E402
from upres.faces.restore import FaceRestorer  # noqa: E402
from upres.io.image import read_image  # noqa: E402
from upres.metrics.datasets import datasets_root  # noqa: E402


class Timed(FaceRestorer):
    """The restorer, counting the seconds it spends."""

    seconds = 0.0

    def restore(self, face):
        started = time.perf_counter()
        try:
            return super().restore(face)
        finally:
            self.seconds += time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="*", default=["Set5/HR/woman.png", "Set14/HR/man.png"])
    parser.add_argument("--model", default="realesr-animevideov3-x4")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datasets = datasets_root()
    if datasets is None:
        raise SystemExit("benchmark datasets not found (UPRES_DATASETS)")
    upscaler = load(args.model, device="cpu")
    torch.manual_seed(0)
    descriptor = ModelLoader().load_from_state_dict(GFPGAN().state_dict())
    restorer = Timed(descriptor, "gfpgan-v1.4-shaped", torch.device("cpu"))
    enhancer = FaceEnhancer(upscaler, restorer, FaceDetector(), FaceOptions())
    for name in args.photos:
        image = read_image(datasets / name)
        upscaler.upscale_image(image)  # warm-up: first-call costs are not the model's
        started = time.perf_counter()
        upscaler.upscale_image(image)
        plain = time.perf_counter() - started
        started = time.perf_counter()
        faces = enhancer.find_faces(image)
        detection = time.perf_counter() - started
        restorer.seconds = 0.0
        started = time.perf_counter()
        enhancer.upscale_image(image)
        enhanced = time.perf_counter() - started
        row = {
            "photo": name,
            "size": [image.width, image.height],
            "faces": len(faces),
            "plain_s": round(plain, 2),
            "enhanced_s": round(enhanced, 2),
            "detection_s": round(detection, 2),
            "restore_s_per_face": round(restorer.seconds / max(1, len(faces)), 2),
            "ratio_enhanced_to_plain": round(enhanced / plain, 2),
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
