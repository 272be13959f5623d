"""The engine: plan tiles from free memory, infer them, blend and assemble off the accelerator."""
