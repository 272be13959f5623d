"""Defaults read from the environment, under our names and under the seed's.

`UPRES_TILE_SIZE`, `UPRES_MAX_INPUT_SIZE` and `UPRES_PRECISION` are also read as
`TILE_SIZE`, `MAX_INPUT_SIZE` and `FP16_ENABLE`, the names the hosted Swin2SR images use,
so their configurations keep working; the `UPRES_` name wins when both are set.
"""

from __future__ import annotations

import os

# our name -> the seed's name
SEED_NAMES = {
    "UPRES_TILE_SIZE": "TILE_SIZE",
    "UPRES_MAX_INPUT_SIZE": "MAX_INPUT_SIZE",
    "UPRES_PRECISION": "FP16_ENABLE",
}
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def setting(name: str) -> str | None:
    """The value of `name` (an UPRES_ variable), else of its seed alias; None when unset.

    FP16_ENABLE is a switch: true means fp16, false means full precision (fp32).
    """
    value = os.environ.get(name, "").strip()
    if value:
        return value
    alias = SEED_NAMES.get(name)
    value = os.environ.get(alias, "").strip() if alias else ""
    if not value:
        return None
    if alias == "FP16_ENABLE":
        return fp16_switch(value)
    return value


def fp16_switch(value: str) -> str:
    if value.lower() in TRUE:
        return "fp16"
    if value.lower() in FALSE:
        return "fp32"
    raise ValueError(f"FP16_ENABLE must be true or false, not {value!r}")
