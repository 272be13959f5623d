"""`upres train CONFIG`: train a model from a TOML config (see configs/)."""

from __future__ import annotations

from pathlib import Path

import typer

from upres.cli.common import EXIT_USAGE, err, out, print_error
from upres.errors import UpresError


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        config: Path = typer.Argument(
            ..., help="A TOML training config, e.g. configs/smoke-cpu.toml."
        ),
        resume: Path | None = typer.Option(
            None, "--resume", help="Continue from a training checkpoint (…/last.safetensors)."
        ),
        steps: int | None = typer.Option(None, "--steps", help="Override train.steps."),
        output_dir: Path | None = typer.Option(None, "-o", "--out", help="Override output.dir."),
        device: str | None = typer.Option(None, "--device", help="Override train.device."),
        minutes: float | None = typer.Option(
            None,
            "--minutes",
            min=0.0,
            help="Stop after this many minutes of training and save a checkpoint (a slice;"
            " the next slice resumes it with --resume).",
        ),
    ) -> None:
        """Train (or continue training) a super-resolution model; Ctrl-C saves a checkpoint."""
        from upres.train.config import load_config
        from upres.train.loop import train

        overrides: dict[str, dict] = {}
        if resume is not None:
            overrides.setdefault("model", {})["resume"] = str(resume.resolve())
        if steps is not None:
            overrides.setdefault("train", {})["steps"] = steps
        if device is not None:
            overrides.setdefault("train", {})["device"] = device
        if output_dir is not None:
            overrides.setdefault("output", {})["dir"] = str(output_dir.resolve())
        try:
            loaded = load_config(config, overrides)
            max_seconds = minutes * 60 if minutes is not None else None
            result = train(loaded, report=show_row, max_seconds=max_seconds)
        except (UpresError, FileNotFoundError, ValueError) as error:
            print_error(str(error))
            raise typer.Exit(EXIT_USAGE) from None
        if result.interrupted:
            err.print(
                f"interrupted at step {result.step}; resume with --resume {result.checkpoint}"
            )
            raise typer.Exit(130)
        if result.sliced:
            err.print(
                f"time budget reached at step {result.step};"
                f" continue with --resume {result.checkpoint}",
                highlight=False,
            )
        out.print(f"checkpoint {result.checkpoint}", highlight=False)
        if result.export:
            out.print(f"model {result.export} (EMA weights; upres upscale -m it)", highlight=False)


def show_row(row: dict) -> None:
    parts = [f"step {row['step']}", f"loss {row['loss']:.5f}"]
    if "lr" in row:
        parts.append(f"lr {row['lr']:.2e}")
    if "seconds" in row:
        parts.append(f"{row['seconds']:.0f}s")
    if "val_psnr_y" in row:
        parts.append(f"val PSNR-Y {row['val_psnr_y']:.2f} SSIM-Y {row['val_ssim_y']:.4f}")
    err.print("  ".join(parts), highlight=False)
