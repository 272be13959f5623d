"""Face detection with five landmarks: MTCNN (Zhang et al., 2016), offline.

The pretrained P-, R- and O-Net weights (MIT) ship inside the `facenet-pytorch` wheel on
PyPI. That project pins torch < 2.3 and numpy < 2, so it is never installed: its wheel is
fetched once without dependencies and only the three small state dicts are kept (see
`WheelSource`). The three networks are written out here (about 60 lines) because the only
packaged implementation is that pinned project; the layer names match its state dicts.

Coordinates are input pixels, x to the right and y down, landmarks in the order of the
face template: left eye, right eye, nose tip, left mouth corner, right mouth corner (left
and right as seen in the image).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms

from upres.io.image import unit_float
from upres.models.wheel import WheelSource

PROJECT = "facenet-pytorch"
VERSION = "2.6.0"
WHEEL_SHA256 = "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca"
# sha256 of facenet_pytorch/data/{name}.pt inside that wheel
MEMBER_SHA256 = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}

# The published MTCNN settings: per-stage score thresholds and the pyramid step.
STAGE_THRESHOLDS = (0.6, 0.7, 0.7)
PYRAMID_FACTOR = 0.709
SMALLEST_DETECTABLE = 12  # P-Net's window: faces below this are never seen
# Larger photos are searched on a copy this long, which keeps detection to seconds on a
# CPU: in a 4000 px photo faces from about 40 px (12 px on the copy) are still found.
MAX_SEARCH_SIDE = 1280


@dataclass(frozen=True)
class Face:
    """One detected face: box (x0, y0, x1, y1), confidence 0..1, landmarks 5 x (x, y)."""

    box: tuple[float, float, float, float]
    confidence: float
    landmarks: np.ndarray  # float32, shape (5, 2)

    @property
    def size(self) -> float:
        """The box's longer side in pixels."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


# -- the three networks ------------------------------------------------------------------


class PNet(nn.Module):
    """Proposal net: fully convolutional, a face score and a box offset per 12x12 window."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement net: 24x24 crops -> face score and box offset."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights come from Caffe, which flattens width-major.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net: 48x48 crops -> face score, box offset and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


# -- weights -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _WeightsName:
    """What WheelSource needs of a card: a name for its messages."""

    name: str


def weight_sources() -> dict[str, WheelSource]:
    return {
        net: WheelSource(
            project=PROJECT,
            version=VERSION,
            member=f"facenet_pytorch/data/{net}.pt",
            wheel_sha256=WHEEL_SHA256,
            sha256=digest,
        )
        for net, digest in MEMBER_SHA256.items()
    }


def fetch_weights() -> dict[str, Path]:
    """The three verified weight files in the cache (fetched from PyPI the first time)."""
    return {
        net: source.fetch(_WeightsName(f"mtcnn-{net}"))  # type: ignore[arg-type]
        for net, source in weight_sources().items()
    }


def weights_are_local() -> bool:
    return all(source.is_local(None) for source in weight_sources().values())  # type: ignore[arg-type]


# -- the detector ------------------------------------------------------------------------


class FaceDetector:
    """MTCNN on the CPU (a few hundred ms per photo; the face models are the heavy part)."""

    def __init__(self, weights: dict[str, Path] | None = None) -> None:
        from upres.models.loader import read_state_dict

        weights = weights or fetch_weights()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for net, module in (("pnet", self.pnet), ("rnet", self.rnet), ("onet", self.onet)):
            module.load_state_dict(read_state_dict(weights[net]))
            module.eval()
        self._lock = threading.Lock()  # torch modules are fine, but keep one caller at a time

    def detect(
        self, rgb: np.ndarray, *, min_size: float = 20.0, min_confidence: float = 0.9
    ) -> list[Face]:
        """Faces in an H x W x 3 RGB image (uint8, or float in [0, 1]), largest first.

        Faces whose box is smaller than `min_size` pixels or whose final score is below
        `min_confidence` are left out.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 RGB array, got shape {rgb.shape}")
        pixels = unit_float(rgb) * np.float32(255.0)  # the networks take 0..255
        ratio = min(1.0, MAX_SEARCH_SIDE / max(rgb.shape[:2]))
        if ratio < 1.0:
            size = (max(1, round(rgb.shape[1] * ratio)), max(1, round(rgb.shape[0] * ratio)))
            pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        with self._lock, torch.inference_mode():
            found = run_cascade(self, pixels, max(float(min_size) * ratio, SMALLEST_DETECTABLE))
        faces = [rescaled(face, 1.0 / ratio) for face in found] if ratio < 1.0 else found
        kept = [f for f in faces if f.confidence >= min_confidence and f.size >= min_size]
        return sorted(kept, key=lambda f: f.size, reverse=True)


def rescaled(face: Face, factor: float) -> Face:
    """A face found on a resized copy, in the original's pixels (centres kept)."""
    x0, y0, x1, y1 = ((v + 0.5) * factor - 0.5 for v in face.box)
    landmarks = (face.landmarks + 0.5) * np.float32(factor) - 0.5
    return Face((x0, y0, x1, y1), face.confidence, landmarks.astype(np.float32))


def normalised(pixels: torch.Tensor) -> torch.Tensor:
    """0..255 -> the range the networks were trained on."""
    return (pixels - 127.5) * 0.0078125


def pyramid_scales(height: int, width: int, min_size: float) -> list[float]:
    """Scales at which P-Net's 12 px window matches faces from `min_size` up to the image."""
    scale = SMALLEST_DETECTABLE / min_size
    side = min(height, width) * scale
    scales = []
    while side >= SMALLEST_DETECTABLE:
        scales.append(scale)
        scale *= PYRAMID_FACTOR
        side *= PYRAMID_FACTOR
    return scales


def area_resized(pixels: np.ndarray, height: int, width: int) -> torch.Tensor:
    """H x W x 3 float -> 1 x 3 x height x width, area-averaged as the nets were trained.
    (OpenCV rather than torch's adaptive pooling: tens of times faster on a CPU.)"""
    resized = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None]


def run_cascade(detector: FaceDetector, image: np.ndarray, min_size: float) -> list[Face]:
    boxes = propose(detector.pnet, image, min_size)
    if len(boxes):
        boxes = refine(detector.rnet, image, boxes)
    if not len(boxes):
        return []
    return finish(detector.onet, image, boxes)


def propose(pnet: PNet, image: np.ndarray, min_size: float) -> torch.Tensor:
    """Stage 1: candidate squares (N x 5: box and score) from every pyramid level."""
    height, width = image.shape[:2]
    found = []
    for scale in pyramid_scales(height, width, min_size):
        level = normalised(area_resized(image, int(height * scale + 1), int(width * scale + 1)))
        offsets, scores = pnet(level)
        candidates = windows_to_boxes(offsets[0], scores[0, 1], scale, STAGE_THRESHOLDS[0])
        found.append(candidates[nms(candidates[:, :4], candidates[:, 4], 0.5)])
    boxes = torch.cat(found) if found else torch.zeros(0, 9)
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    width_, height_ = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    regressed = torch.stack(
        [
            boxes[:, 0] + boxes[:, 5] * width_,
            boxes[:, 1] + boxes[:, 6] * height_,
            boxes[:, 2] + boxes[:, 7] * width_,
            boxes[:, 3] + boxes[:, 8] * height_,
            boxes[:, 4],
        ],
        dim=1,
    )
    return squared(regressed)


def windows_to_boxes(
    offsets: torch.Tensor, scores: torch.Tensor, scale: float, threshold: float
) -> torch.Tensor:
    """P-Net output map -> boxes in image pixels (x0, y0, x1, y1, score, 4 offsets)."""
    stride, cell = 2, 12
    rows, cols = torch.nonzero(scores >= threshold, as_tuple=True)
    corner = torch.stack([cols, rows], dim=1).float()
    top_left = ((stride * corner + 1) / scale).floor()
    bottom_right = ((stride * corner + cell) / scale).floor()
    return torch.cat(
        [top_left, bottom_right, scores[rows, cols][:, None], offsets[:, rows, cols].T], dim=1
    )


def refine(rnet: RNet, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
    """Stage 2: R-Net rescores 24x24 crops and corrects their boxes."""
    offsets, scores = rnet(normalised(crops(image, boxes, 24)))
    keep = scores[:, 1] > STAGE_THRESHOLDS[1]
    boxes = torch.cat([boxes[keep, :4], scores[keep, 1:2]], dim=1)
    offsets = offsets[keep]
    picked = nms(boxes[:, :4], boxes[:, 4], 0.7)
    return squared(regress(boxes[picked], offsets[picked]))


def finish(onet: ONet, image: np.ndarray, boxes: torch.Tensor) -> list[Face]:
    """Stage 3: O-Net's final score, box and landmarks; overlapping boxes merged."""
    offsets, points, scores = onet(normalised(crops(image, boxes, 48)))
    keep = scores[:, 1] > STAGE_THRESHOLDS[2]
    boxes = torch.cat([boxes[keep, :4], scores[keep, 1:2]], dim=1)
    points, offsets = points[keep], offsets[keep]
    sides_x = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    sides_y = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    xs = sides_x * points[:, :5] + boxes[:, 0:1] - 1
    ys = sides_y * points[:, 5:] + boxes[:, 1:2] - 1
    landmarks = torch.stack([xs, ys], dim=2)
    boxes = regress(boxes, offsets)
    picked = nms_by_smaller_area(boxes.numpy(), 0.7)
    return [
        Face(
            box=tuple(float(v) for v in boxes[i, :4]),  # type: ignore[arg-type]
            confidence=float(boxes[i, 4]),
            landmarks=landmarks[i].numpy().astype(np.float32),
        )
        for i in picked
    ]


def squared(boxes: torch.Tensor) -> torch.Tensor:
    """Each box grown to a square around its centre (the next net takes square crops)."""
    boxes = boxes.clone()
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(width, height)
    boxes[:, 0] += width * 0.5 - side * 0.5
    boxes[:, 1] += height * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    boxes = boxes.clone()
    width = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    height = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    boxes[:, :4] += offsets * torch.cat([width, height, width, height], dim=1)
    return boxes


def crops(image: np.ndarray, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each box's pixels (clipped to the image, 1-based as the weights expect) at size x size."""
    height, width = image.shape[:2]
    corners = boxes[:, :4].trunc().int().tolist()
    out = []
    for x0, y0, x1, y1 in corners:
        x0, y0 = max(x0, 1), max(y0, 1)
        x1, y1 = min(x1, width), min(y1, height)
        if x1 <= x0 - 1 or y1 <= y0 - 1:
            patch = torch.zeros(1, 3, size, size)
        else:
            patch = area_resized(image[y0 - 1 : y1, x0 - 1 : x1], size, size)
        out.append(patch)
    return torch.cat(out)


def nms_by_smaller_area(boxes: np.ndarray, threshold: float) -> list[int]:
    """Non-maximum suppression where overlap is measured against the smaller box, so a box
    inside a bigger one (the same face found twice) is dropped even if the IoU is small."""
    order = list(np.argsort(-boxes[:, 4]))
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    kept: list[int] = []
    while order:
        best, *rest = order
        kept.append(int(best))
        x0 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x1 - x0 + 1, 0, None) * np.clip(y1 - y0 + 1, 0, None)
        overlap = inter / np.minimum(area[best], area[rest]) if rest else np.zeros(0)
        order = [i for i, o in zip(rest, overlap, strict=True) if o <= threshold]
    return kept
