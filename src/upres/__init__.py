"""upres: image super-resolution and restoration that never runs out of memory.

>>> import upres
>>> upscaler = upres.load()              # realesrgan-x4plus, offline
>>> bigger = upscaler(pil_image)         # PIL, numpy or torch in; the same kind out
>>> upscaler.upscale_file("in.jpg", "out.png")
"""

from importlib.metadata import PackageNotFoundError, version

from upres.api import Upscaler, load
from upres.errors import (
    BadInputError,
    ModelLoadError,
    ModelNotFoundError,
    OutOfMemoryError,
    OutputExistsError,
    UpresError,
)

try:
    __version__ = version("upres")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

__all__ = [
    "BadInputError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OutOfMemoryError",
    "OutputExistsError",
    "UpresError",
    "Upscaler",
    "__version__",
    "load",
]
