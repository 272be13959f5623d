"""The hostile corpus (tests/hostile_corpus.py) through the CLI, the API and the service:
every valid input written, every bad one refused alone and by name, nothing left behind.

As root, permissions do not bind, so the CLI and API runs drop to `nobody` (setpriv) for
the unreadable file and the read-only folder to mean what they mean to a user.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image as PILImage

import upres
from hostile_corpus import MAX_OUTPUT_PIXELS, Corpus, build, output_of
from server_support import fast_config, live_server

SRC = Path(upres.__file__).resolve().parents[1]
NOBODY = 65534


@functools.cache
def as_user() -> list[str]:
    """The command prefix that runs as an ordinary user, when we are root and that user
    can read this checkout and the Python in use (a checkout under /root is not)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return []
    prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    tests = Path(__file__).parent
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tests)!r});"
         " import upres, hostile_corpus"],
        capture_output=True, cwd="/", env={"PYTHONPATH": str(SRC), "HOME": "/tmp"},
    )  # fmt: skip
    return prefix if probe.returncode == 0 else []


def permissions_bind() -> bool:
    return os.geteuid() != 0 or bool(as_user())


@pytest.fixture
def workspace(compact_checkpoint: Path) -> Iterator[Path]:
    """A folder an unprivileged user can use (pytest's own tmp folders are root-only)."""
    root = Path(tempfile.mkdtemp(prefix="upres-hostile-"))
    root.chmod(0o777)
    shutil.copy(compact_checkpoint, root / "model.pth")
    (root / "model.pth").chmod(0o644)
    yield root
    for folder in root.rglob("*"):  # give back write access so everything can go
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(0o777)
    shutil.rmtree(root, ignore_errors=True)


def built(root: Path) -> Corpus:
    corpus = build(root)
    corpus.root.chmod(0o777)  # results are written beside the inputs
    if not permissions_bind():  # root, and no ordinary user to run as: these simply work
        corpus.bad.remove(corpus.root / "unreadable.png")
        corpus.blocked.remove(corpus.read_only / "inside.png")
        corpus.valid += [corpus.root / "unreadable.png", corpus.read_only / "inside.png"]
    return corpus


def run_as_user(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(SRC),
        "HOME": str(cwd),
        "UPRES_CACHE_DIR": str(cwd / "cache"),
        "UPRES_THREADS": "1",
    }
    return subprocess.run(
        [*as_user(), sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=600,
    )


def shown(path: Path, cwd: Path) -> str:
    """How the CLI prints a path given relative to `cwd` (non-UTF-8 bytes as \\xNN)."""
    return os.fsencode(path.relative_to(cwd)).decode("utf-8", "backslashreplace")


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".upres-tmp" in p.name or ".upres-probe" in p.name]


def test_one_cli_call_over_the_whole_corpus(workspace: Path) -> None:
    corpus = built(workspace)
    assert len(corpus.inputs) >= 40
    arguments = [str(p.relative_to(workspace)) for p in corpus.arguments]
    result = run_as_user(
        ["-m", "upres", "upscale", *arguments, "-m", "model.pth", "--json",
         "--max-output-pixels", str(MAX_OUTPUT_PIXELS)],
        workspace,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    summary = json.loads(result.stdout)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for path in corpus.bad + corpus.blocked:
        mine = [line for line in errors if line.startswith(f"error: {shown(path, workspace)}: ")]
        assert len(mine) == 1, (path.name, errors)
    assert len(errors) == len(corpus.bad) + len(corpus.blocked)
    assert summary["done"] == len(corpus.valid) and summary["failed"] == len(errors)
    for path in corpus.valid:
        with PILImage.open(output_of(path)) as written, PILImage.open(path) as original:
            assert written.size == (2 * original.width, 2 * original.height), path.name
    for path in corpus.bad + corpus.blocked:
        assert not output_of(path).is_file(), path.name
    assert leftovers(workspace) == []


API_RUN = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import upres
from hostile_corpus import MAX_OUTPUT_PIXELS, output_of
runner = upres.load("model.pth", device="cpu")
outcomes = {}
for name in sys.argv[1].split(os.pathsep):
    source = Path(name)
    try:
        runner.upscale_file(source, output_of(source), max_output_pixels=MAX_OUTPUT_PIXELS)
        outcomes[os.fsencode(name).hex()] = "done"
    except upres.UpresError as error:
        outcomes[os.fsencode(name).hex()] = type(error).__name__
    except BaseException as error:
        outcomes[os.fsencode(name).hex()] = f"UNTYPED {type(error).__name__}: {error}"
print(json.dumps(outcomes))
"""


def test_the_corpus_through_the_api(workspace: Path) -> None:
    corpus = built(workspace)
    names = os.pathsep.join(str(p.relative_to(workspace)) for p in corpus.inputs)
    tests = str(Path(__file__).parent)
    result = run_as_user(["-c", API_RUN, names, tests], workspace)
    assert result.returncode == 0, result.stderr
    outcomes = {
        os.fsdecode(bytes.fromhex(key)): value for key, value in json.loads(result.stdout).items()
    }
    for path in corpus.valid:
        assert outcomes[str(path.relative_to(workspace))] == "done", path.name
    for path in corpus.bad + corpus.blocked:
        outcome = outcomes[str(path.relative_to(workspace))]
        assert outcome != "done" and not outcome.startswith("UNTYPED"), (path.name, outcome)
    assert leftovers(workspace) == []


def test_the_corpus_through_the_service(tmp_path: Path) -> None:
    corpus = build(tmp_path)
    uploads = [p for p in corpus.valid + corpus.bad if p.is_file() and not p.is_symlink()]
    uploads = [p for p in uploads if p.name not in ("unreadable.png", "pipe.png")]
    config = fast_config(tmp_path / "data")
    with live_server(config) as base, httpx.Client(base_url=base, timeout=120) as client:
        for path in uploads:
            name = os.fsencode(path.name).decode("utf-8", "backslashreplace")
            files = {"file": (name, path.read_bytes())}
            answer = client.post("/v1/upscale", files=files)
            assert answer.status_code < 500, (path.name, answer.status_code, answer.text)
            if path in corpus.valid:
                assert answer.status_code == 200, (path.name, answer.text)
                if path.name.startswith("animated"):  # never silently one frame
                    with PILImage.open(io.BytesIO(answer.content)) as result:
                        assert result.n_frames > 1, path.name
            else:
                assert 400 <= answer.status_code < 500, path.name
                body = answer.json()
                assert body["error"] and body["detail"]
                assert str(tmp_path) not in answer.text and "/tmp/" not in answer.text


def read_only_mount_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not read_only_mount_works(), reason="needs root and mount namespaces")
def test_a_read_only_filesystem_is_one_line_before_the_upscale(
    tmp_path: Path, compact_checkpoint: Path
) -> None:
    """The issue's case exactly: EROFS (errno 30), not a permission bit."""
    folder = tmp_path / "mounted"
    folder.mkdir()
    PILImage.new("RGB", (12, 10), (200, 30, 30)).save(folder / "in.png")
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(folder), sys.executable, "-m", "upres",
         "upscale", str(folder / "in.png"), "-m", str(compact_checkpoint)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Read-only file system" in errors[0], result.stderr
    assert "in_x2.png" in errors[0] and "Traceback" not in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["in.png"]
