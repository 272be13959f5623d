"""upres: image super-resolution and restoration that never runs out of memory.

>>> import upres
>>> upscaler = upres.load()              # realesrgan-x4plus, offline
>>> bigger = upscaler(pil_image)         # PIL, numpy or torch in; the same kind out
>>> upscaler.upscale_file("in.jpg", "out.png")
>>> chain = upres.load(["swinir-jpeg-colour-q40-x1", "swin2sr-classical-x4"])  # in order
"""

from importlib.metadata import PackageNotFoundError, version

from upres.api import Pipeline, Upscaler, load, load_chain
from upres.errors import (
    BadInputError,
    ModelLoadError,
    ModelNotFoundError,
    OutOfMemoryError,
    OutputExistsError,
    UpresError,
)
from upres.model_api import Model

try:
    __version__ = version("upres")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

__all__ = [
    "BadInputError",
    "Model",
    "ModelLoadError",
    "ModelNotFoundError",
    "OutOfMemoryError",
    "OutputExistsError",
    "Pipeline",
    "UpresError",
    "Upscaler",
    "__version__",
    "load",
    "load_chain",
]
