"""Face alignment, paste-back and restoration around the upscaler, with real networks:
MTCNN's pretrained weights, a randomly initialised GFPGAN from spandrel, a tiny Compact."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from spandrel.architectures.GFPGAN import GFPGAN
from typer.testing import CliRunner

from conftest import descriptor_of, tiny_compact
from upres.api import ImageRunner, Upscaler, UpscaleReport, load
from upres.cli.main import app
from upres.errors import ModelNotFoundError
from upres.faces import align
from upres.faces.detect import FaceDetector
from upres.faces.enhance import FaceEnhancer, FaceOptions
from upres.faces.restore import FaceRestorer, load_restorer
from upres.io.image import Image, read_image
from upres.metrics.datasets import datasets_root
from upres.models.catalog import CATALOG
from upres.models.loader import LoadedModel
from upres.models.sources import UrlSource
from upres.models.zoo.faces import DEFAULT_FACE_MODEL

ROOT = datasets_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="benchmark datasets not found")
FACE_MODELS = ["gfpgan-v1.3", "gfpgan-v1.4", "restoreformer", "codeformer"]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def gfpgan() -> torch.nn.Module:
    torch.manual_seed(0)
    return GFPGAN()


@pytest.fixture(scope="module")
def random_gfpgan(gfpgan: torch.nn.Module) -> FaceRestorer:
    return FaceRestorer(descriptor_of(gfpgan), "gfpgan-random", torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny_restorer() -> FaceRestorer:
    """A real x1 network, ~1000x cheaper than GFPGAN (a 512x512 GFPGAN pass takes tens of
    seconds on a busy 2-core CPU), for the tests about plumbing rather than the model."""
    return FaceRestorer(descriptor_of(tiny_compact(1)), "tiny-face", torch.device("cpu"))


@pytest.fixture(scope="module")
def face_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny x1 network in the release files' wrapper, as a face model file."""
    path = tmp_path_factory.mktemp("faces") / "tiny-face.pth"
    torch.save({"params_ema": tiny_compact(1).state_dict()}, path)
    return path


def photo(name: str) -> Image:
    assert ROOT is not None
    return read_image(ROOT / name)


class Unchanged(ImageRunner):
    """A x1 runner that gives its input back as 8-bit: the background stays the input."""

    name, scale, architecture = "unchanged", 1, "none"
    device, dtype = torch.device("cpu"), torch.float32

    def upscale_image(self, image: Image, **_options) -> tuple[Image, UpscaleReport]:
        pixels = np.rint(image.pixels * 255).astype(np.uint8)
        return dataclasses.replace(image, pixels=pixels), UpscaleReport()


class IdentityRestorer:
    """Gives the aligned face back as it is."""

    name, device = "identity", torch.device("cpu")

    def restore(self, face: np.ndarray) -> np.ndarray:
        return face


def tiny_upscaler(scale: int = 2) -> Upscaler:
    descriptor = descriptor_of(tiny_compact(scale))
    return Upscaler(LoadedModel(descriptor, "tiny", None, Path("tiny.pth")), device="cpu")


def footprint(image: Image, face, output_size: tuple[int, int]) -> np.ndarray:
    """Where the face's feathered mask lands in the output (0 outside, 1 fully inside)."""
    where = align.placement(
        align.face_transform(face.landmarks), (image.width, image.height), output_size
    )
    weights = np.zeros(output_size[::-1], np.float32)
    size = (where.x1 - where.x0, where.y1 - where.y0)
    weights[where.y0 : where.y1, where.x0 : where.x1] = align.warp(
        align.feather_mask(), where.matrix, size, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT
    )
    return weights


# -- geometry ----------------------------------------------------------------------------


def test_alignment_puts_the_landmarks_on_the_template() -> None:
    angle, scale, shift = np.deg2rad(12), 0.37, np.array([40.0, 25.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = align.FFHQ_TEMPLATE @ rotation.T + shift  # a tilted face, ~190 px wide
    matrix = align.face_transform(landmarks)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - align.FFHQ_TEMPLATE).max() < 0.05


def test_placement_scales_to_the_output_and_stays_inside_it() -> None:
    landmarks = align.FFHQ_TEMPLATE * 0.25 - 20  # a face at the corner of a 200x100 input
    matrix = align.face_transform(landmarks)
    where = align.placement(matrix, (200, 100), (800, 400))
    assert (where.x0, where.y0) == (0, 0) and where.x1 <= 800 and where.y1 <= 400
    # The template's left eye lands on 4 x the input's eye (pixel centres kept).
    eye = where.matrix @ np.array([*align.FFHQ_TEMPLATE[0], 1.0]) + (where.x0, where.y0)
    assert np.allclose(eye, (landmarks[0] + 0.5) * 4 - 0.5, atol=0.05)


# -- paste-back --------------------------------------------------------------------------


def test_an_identity_restorer_leaves_the_photo_as_it_was(detector: FaceDetector) -> None:
    image = photo("Set5/HR/woman.png")
    enhancer = FaceEnhancer(Unchanged(), IdentityRestorer(), detector, FaceOptions())
    result, report = enhancer.upscale_image(image)
    assert report.notes == ["1 face(s) restored with identity"]
    before = np.rint(image.pixels * 255).astype(np.int16)
    change = np.abs(result.pixels.astype(np.int16) - before)
    weights = footprint(image, enhancer.find_faces(image)[0], (image.width, image.height))
    outside, inside = weights == 0, weights == 1
    assert inside.sum() > 100 * 100 and outside.sum() > 10_000
    assert change[outside].max() < 1  # outside the feathered border: not a grey level
    # Inside, the face went to the 512 template and back (two Lanczos resamplings).
    assert change[inside].mean() < 0.5 and np.percentile(change[inside], 99) <= 1


def test_strength_zero_is_the_sr_result_and_one_is_the_restored_face(
    detector: FaceDetector, tiny_restorer: FaceRestorer
) -> None:
    image = photo("Set5/HR/woman.png")
    plain, _ = Unchanged().upscale_image(image)
    results = {}
    for strength in (0.0, 0.5, 1.0):
        options = FaceOptions(strength=strength)
        enhancer = FaceEnhancer(Unchanged(), tiny_restorer, detector, options)
        results[strength] = enhancer.upscale_image(image)[0].pixels.astype(np.float32)
    assert np.array_equal(results[0.0], plain.pixels)
    # Half strength is halfway (up to rounding to 8 bits).
    halfway = (results[1.0] + plain.pixels) / 2
    assert np.abs(results[0.5] - halfway).max() <= 1.0
    assert np.abs(results[1.0] - plain.pixels).max() > 2


def test_a_random_gfpgan_keeps_size_mode_alpha_and_metadata(
    detector: FaceDetector, random_gfpgan: FaceRestorer
) -> None:
    image = photo("Set5/HR/woman.png")
    height, width = image.height, image.width
    ramp = np.linspace(0.2, 1.0, width, dtype=np.float32)
    image = dataclasses.replace(
        image, alpha=np.tile(ramp, (height, 1)), bit_depth=16, exif=b"Exif\x00\x00MM\x00*"
    )
    upscaler = tiny_upscaler(2)
    plain, _ = upscaler.upscale_image(image)
    enhancer = FaceEnhancer(upscaler, random_gfpgan, detector, FaceOptions())
    result, report = enhancer.upscale_image(image)
    assert result.pixels.shape == plain.pixels.shape == (2 * height, 2 * width, 3)
    assert result.pixels.dtype == np.uint16 and result.bit_depth == 16
    assert np.array_equal(result.alpha, plain.alpha)
    assert result.exif == image.exif and result.icc_profile == image.icc_profile
    weights = footprint(image, enhancer.find_faces(image)[0], (2 * width, 2 * height))
    assert np.array_equal(result.pixels[weights == 0], plain.pixels[weights == 0])
    assert not np.array_equal(result.pixels[weights == 1], plain.pixels[weights == 1])
    assert "1 face(s) restored with gfpgan-random" in report.notes
    assert random_gfpgan.signed  # GFPGAN works in [-1, 1]: the restorer maps to and fro


def test_grey_and_pil_inputs_come_back_in_their_own_mode(
    detector: FaceDetector, tiny_restorer: FaceRestorer
) -> None:
    enhancer = FaceEnhancer(tiny_upscaler(2), tiny_restorer, detector, FaceOptions())
    assert ROOT is not None
    with PILImage.open(ROOT / "Set14/HR/man.png") as source:
        for mode in ("L", "RGBA"):
            given = source.convert(mode)
            result = enhancer(given)
            assert result.mode == mode and result.size == (1024, 1024)


def test_faces_are_restored_one_at_a_time(
    detector: FaceDetector, tiny_restorer: FaceRestorer
) -> None:
    woman, man = photo("Set5/HR/woman.png").pixels, photo("Set14/HR/man.png").pixels
    crops = [woman, man[20:364, 140:368], woman[:, ::-1]]  # three faces side by side
    group = Image(pixels=np.ascontiguousarray(np.concatenate(crops, axis=1)))
    batches: list[int] = []
    hook = tiny_restorer.descriptor.model.register_forward_pre_hook(
        lambda _module, args: batches.append(args[0].shape[0])
    )
    try:
        enhancer = FaceEnhancer(Unchanged(), tiny_restorer, detector, FaceOptions())
        _, report = enhancer.upscale_image(group)
    finally:
        hook.remove()
    assert batches == [1, 1, 1]
    assert report.notes == ["3 face(s) restored with tiny-face"]


# -- the catalogue, the API and the command line -----------------------------------------


def test_face_cards_carry_licence_url_and_sha256() -> None:
    for name in FACE_MODELS:
        card = CATALOG[name]
        assert card.task == "face" and card.scale == 1 and len(card.sha256 or "") == 64
        assert isinstance(card.source, UrlSource) and card.source.url
        assert card.source.url.startswith("https://github.com/")
    assert "NON-COMMERCIAL" in CATALOG["codeformer"].license
    assert DEFAULT_FACE_MODEL == "gfpgan-v1.4" and not CATALOG[DEFAULT_FACE_MODEL].extra_arches


def test_models_list_says_codeformer_is_non_commercial() -> None:
    listed = CliRunner().invoke(app, ["models", "--json"], catch_exceptions=False)
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert "NON-COMMERCIAL" in rows["codeformer"]["license"]
    assert rows["codeformer"]["task"] == "face" and not rows["codeformer"]["default"]


def test_face_and_image_models_are_not_mixed_up(random_gfpgan: FaceRestorer) -> None:
    with pytest.raises(ModelNotFoundError, match="not a face model"):
        load_restorer("realesrgan-x4plus", torch.device("cpu"))
    face_card = CATALOG["gfpgan-v1.4"]
    loaded = LoadedModel(random_gfpgan.descriptor, face_card.name, face_card, Path("x.pth"))
    with pytest.raises(ModelNotFoundError, match="--face-enhance"):
        Upscaler(loaded, device="cpu")
    with pytest.raises(ValueError, match="face strength"):
        FaceOptions(strength=1.5)


def test_api_face_enhance_wraps_the_upscaler(face_file: Path, compact_checkpoint) -> None:
    runner = load(compact_checkpoint, device="cpu", face_enhance=str(face_file))
    assert isinstance(runner, FaceEnhancer) and runner.scale == 2
    assert runner.restorer.name == "tiny-face"
    assert not isinstance(load(compact_checkpoint, device="cpu"), FaceEnhancer)


def test_cli_face_enhance_writes_the_result(
    face_file: Path, compact_checkpoint: Path, tmp_path: Path
) -> None:
    assert ROOT is not None
    out = tmp_path / "out.png"
    result = CliRunner().invoke(
        app,
        [
            "upscale",
            str(ROOT / "Set5/HR/woman.png"),
            "-o",
            str(out),
            "-m",
            str(compact_checkpoint),
            "--face-enhance",
            str(face_file),
            "--face-strength",
            "0.8",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "1 face(s) restored with tiny-face" in result.output
    with PILImage.open(out) as written:
        assert written.size == (456, 688)


def test_cli_refuses_a_bad_face_strength() -> None:
    result = CliRunner().invoke(app, ["upscale", "x.png", "--face-strength", "2"])
    assert result.exit_code == 2


# -- downloads of the face models from a local server ------------------------------------


def serve_card(monkeypatch, files: dict[str, bytes], base: str, name: str, body: bytes) -> None:
    card = CATALOG[name]
    assert isinstance(card.source, UrlSource) and card.source.url
    path = card.source.url.removeprefix("https://github.com")
    files[path] = body
    source = UrlSource(base + path, card.source.filename)
    served = dataclasses.replace(card, source=source, sha256=hashlib.sha256(body).hexdigest())
    monkeypatch.setitem(CATALOG, name, served)


@pytest.fixture
def release_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from test_download import Handler, Served

    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path / "cache"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.served = Served()  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.served.files  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("name", FACE_MODELS)
def test_each_face_model_downloads_verified_from_its_release_path(
    name: str, release_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, files = release_server
    body = np.random.default_rng(1).bytes(200_000)
    serve_card(monkeypatch, files, base, name, body)
    fetched = CliRunner().invoke(app, ["models", "fetch", name, "--json"], catch_exceptions=False)
    assert fetched.exit_code == 0, fetched.output
    card = CATALOG[name]
    path = card.source.target(card)
    assert path.name == card.source.filename and path.read_bytes() == body


def test_a_file_that_is_not_the_official_one_is_refused(
    release_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, files = release_server
    official = CATALOG["gfpgan-v1.4"]
    assert isinstance(official.source, UrlSource) and official.source.url
    path = official.source.url.removeprefix("https://github.com")
    files[path] = b"not the release file"
    source = UrlSource(base + path, official.source.filename)
    monkeypatch.setitem(CATALOG, "gfpgan-v1.4", dataclasses.replace(official, source=source))
    fetched = CliRunner().invoke(app, ["models", "fetch", "gfpgan-v1.4"], catch_exceptions=False)
    assert fetched.exit_code == 1 and "sha256" in fetched.output
    assert not source.target(official).exists()


def test_face_enhance_alone_downloads_and_runs_gfpgan_v14(
    release_server,
    monkeypatch: pytest.MonkeyPatch,
    face_file: Path,
    compact_checkpoint: Path,
    tmp_path: Path,
) -> None:
    base, files = release_server
    serve_card(monkeypatch, files, base, "gfpgan-v1.4", face_file.read_bytes())
    assert ROOT is not None
    out = tmp_path / "man.png"
    args = ["upscale", str(ROOT / "Set14/HR/man.png"), "-o", str(out)]
    args += ["-m", str(compact_checkpoint), "--face-enhance"]  # last, no value: the default
    result = CliRunner().invoke(
        app,
        args,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "1 face(s) restored with gfpgan-v1.4" in result.output
    with PILImage.open(out) as written:
        assert written.size == (1024, 1024)


def test_face_enhance_takes_a_model_only_when_one_follows() -> None:
    from upres.cli.upscale import with_default_face_model

    default = "--face-enhance=gfpgan-v1.4"
    assert with_default_face_model(["a.png", "--face-enhance"]) == ["a.png", default]
    assert with_default_face_model(["--face-enhance", "a.png"]) == [default, "a.png"]
    assert with_default_face_model(["--face-enhance", "--json"]) == [default, "--json"]
    for model in ("codeformer", "GFPGAN-v1.3", "mine.safetensors", "x/y.pth"):
        assert with_default_face_model(["--face-enhance", model]) == ["--face-enhance", model]


# -- the service -------------------------------------------------------------------------


def test_the_service_restores_faces_when_asked(
    release_server, monkeypatch: pytest.MonkeyPatch, face_file: Path, tmp_path: Path
) -> None:
    import httpx

    from server_support import fast_config, live_server

    base, files = release_server
    serve_card(monkeypatch, files, base, "gfpgan-v1.4", face_file.read_bytes())
    assert ROOT is not None
    upload = {"file": ("woman.png", (ROOT / "Set5/HR/woman.png").read_bytes(), "image/png")}
    with live_server(fast_config(tmp_path / "data")) as url, httpx.Client(base_url=url) as client:
        refused = client.post("/v1/jobs", files=upload, data={"face": "no-such-face"})
        assert refused.status_code == 422 and refused.json()["error"] == "unknown_face_model"
        refused = client.post("/v1/jobs", files=upload, data={"model": "gfpgan-v1.4"})
        assert refused.status_code == 422 and refused.json()["error"] == "face_model"
        job = client.post("/v1/jobs", files=upload, data={"face": "on", "scale": "2"}).json()
        assert job["face"] == "gfpgan-v1.4"
        for _ in range(600):
            job = client.get(f"/v1/jobs/{job['id']}").json()
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)
        assert job["status"] == "done", job
        assert "1 face(s) restored with gfpgan-v1.4" in job["notes"]
        result = client.get(job["result_url"])
        assert PILImage.open(io.BytesIO(result.content)).size == (456, 688)


@pytest.mark.slow  # three 300 MB random networks: about 45 s
@pytest.mark.parametrize(
    ("family", "signed"), [("GFPGAN", True), ("RestoreFormer", False), ("CodeFormer", True)]
)
def test_each_face_architecture_loads_through_spandrel(
    family: str, signed: bool, tmp_path: Path
) -> None:
    """Random networks of each catalogued family, saved like the release files."""
    from spandrel.architectures.RestoreFormer import RestoreFormer
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(0)
    network = {"GFPGAN": GFPGAN, "RestoreFormer": RestoreFormer, "CodeFormer": CodeFormer}[family]()
    path = tmp_path / f"{family}.pth"
    torch.save({"params_ema": network.state_dict()}, path)
    restorer = load_restorer(str(path), torch.device("cpu"))
    assert restorer.descriptor.architecture.id == family and restorer.signed is signed
