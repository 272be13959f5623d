"""upres: image super-resolution and restoration that never runs out of memory.

>>> import upres
>>> upscaler = upres.load()              # realesrgan-x4plus, offline
>>> bigger = upscaler(pil_image)         # PIL, numpy or torch in; the same kind out
>>> upscaler.upscale_file("in.jpg", "out.png")
>>> chain = upres.load(["swinir-jpeg-colour-q40-x1", "swin2sr-classical-x4"])  # in order
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from upres.errors import (
    BadInputError,
    ModelLoadError,
    ModelNotFoundError,
    ModelUnavailableError,
    OutOfMemoryError,
    OutputError,
    OutputExistsError,
    OutputTooLargeError,
    RequestError,
    UpresError,
)
from upres.request import UpscaleRequest

if TYPE_CHECKING:
    from upres.api import Pipeline, Upscaler, configure_cpu, load, load_chain
    from upres.model_api import Model

# The engine needs torch (seconds to import); `import upres` alone must stay instant so
# that `upres --help` and `upres models` start at once. These come from upres.api on first use.
_FROM_API = ("Pipeline", "Upscaler", "configure_cpu", "load", "load_chain")


def __getattr__(name: str) -> Any:
    if name in _FROM_API:
        import upres.api

        return getattr(upres.api, name)
    if name == "Model":  # the batch-service guides' API (upres.model_api), also torch-backed
        from upres.model_api import Model

        return Model
    if name == "__version__":  # reading package metadata scans every installed package
        return installed_version()
    raise AttributeError(f"module 'upres' has no attribute {name!r}")


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("upres")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0+source"


def __dir__() -> list[str]:
    return sorted(set(globals()) | {*_FROM_API, "Model", "__version__"})


__all__ = [
    "BadInputError",
    "Model",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "OutOfMemoryError",
    "OutputError",
    "OutputExistsError",
    "OutputTooLargeError",
    "Pipeline",
    "RequestError",
    "UpresError",
    "UpscaleRequest",
    "Upscaler",
    "__version__",
    "configure_cpu",
    "load",
    "load_chain",
]
