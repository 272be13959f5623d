"""A PNG of training loss and validation PSNR against steps, from log.csv.

matplotlib (the ``train`` extra) when installed; otherwise a plain chart drawn with Pillow,
so a run never fails for want of a plotting library.
"""

from __future__ import annotations

import csv
from pathlib import Path

Series = list[tuple[float, float]]


def read_series(log: Path) -> tuple[Series, Series]:
    loss: Series = []
    psnr: Series = []
    with log.open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = float(row["step"])
            if row.get("loss"):
                loss.append((step, float(row["loss"])))
            if row.get("val_psnr_y"):
                psnr.append((step, float(row["val_psnr_y"])))
    return loss, psnr


def plot_training(log: Path, target: Path) -> Path | None:
    loss, psnr = read_series(log)
    if not loss:
        return None
    try:
        plot_matplotlib(loss, psnr, target)
    except ImportError:
        plot_pillow(loss, psnr, target)
    return target


def plot_matplotlib(loss: Series, psnr: Series, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    figure, left = plt.subplots(figsize=(8, 4.5), dpi=100)
    left.plot(*zip(*loss, strict=True), color="tab:blue", label="training loss")
    left.set_xlabel("step")
    left.set_ylabel("loss", color="tab:blue")
    left.set_yscale("log")
    if psnr:
        right = left.twinx()
        right.plot(*zip(*psnr, strict=True), "o-", color="tab:red", label="validation PSNR-Y")
        right.set_ylabel("PSNR-Y (dB)", color="tab:red")
    figure.tight_layout()
    figure.savefig(target)
    plt.close(figure)


def plot_pillow(loss: Series, psnr: Series, target: Path) -> None:
    from PIL import Image, ImageDraw

    width, height, margin = 800, 450, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    steps = [s for s, _ in loss + psnr]
    x_range = (min(steps), max(max(steps), min(steps) + 1))
    for series, colour, label in ((loss, "blue", "loss"), (psnr, "red", "PSNR-Y")):
        if series:
            draw_series(draw, series, x_range, (width, height, margin), colour)
            low, high = min(v for _, v in series), max(v for _, v in series)
            draw.text(
                (margin, 10 if colour == "blue" else 25),
                f"{label}: {high:.4g} .. {low:.4g}"
                if colour == "blue"
                else f"{label}: {low:.4g} .. {high:.4g}",
                fill=colour,
            )
    draw.text((width // 2, height - 30), f"step {x_range[0]:.0f} .. {x_range[1]:.0f}", fill="black")
    image.save(target)


def draw_series(draw, series: Series, x_range, box, colour: str) -> None:
    width, height, margin = box
    values = [v for _, v in series]
    low, high = min(values), max(values)
    span_y = (high - low) or 1.0
    span_x = x_range[1] - x_range[0]
    points = [
        (
            margin + (s - x_range[0]) / span_x * (width - 2 * margin),
            height - margin - (v - low) / span_y * (height - 2 * margin),
        )
        for s, v in series
    ]
    if len(points) > 1:
        draw.line(points, fill=colour, width=2)
    for x, y in points:
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
