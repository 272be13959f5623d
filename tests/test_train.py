"""The training pipeline on CPU: a tiny SwinIR learns, checkpoints, resumes and exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

import upres
from upres.cli import train as train_command
from upres.train.checkpoint import META_KEY, load_checkpoint
from upres.train.config import ConfigError, config_from_dict, load_config
from upres.train.data import PairDataset, degrade, find_images
from upres.train.loop import build_model, lr_factor, train

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = PROJECT_ROOT.parent / "shared" / "train" / "t91"
TINY_SWINIR = {
    "img_size": 16,
    "window_size": 4,
    "embed_dim": 16,
    "depths": [1],
    "num_heads": [2],
    "mlp_ratio": 2.0,
    "upsampler": "pixelshuffledirect",
    "img_range": 1.0,
}


def tiny_config(out: Path, steps: int = 30, **sections: dict) -> dict:
    raw = {
        "model": {"arch": "SwinIR", "kwargs": TINY_SWINIR},
        "data": {
            "folders": [str(TRAIN_IMAGES)],
            "scale": 2,
            "crop": 32,
            "batch_size": 8,
            "workers": 0,
            "max_images": 12,
        },
        "train": {"steps": steps, "lr": 2e-3, "warmup_steps": 3, "ema_decay": 0.9, "threads": 2},
        "output": {"dir": str(out), "log_every": 5, "checkpoint_every": 0, "validate_every": 0},
    }
    for section, values in sections.items():
        raw[section] = {**raw[section], **values}
    return raw


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("smoke")
    return out, train(config_from_dict(tiny_config(out, steps=40)))


def test_smoke_run_learns_and_writes_everything(smoke_run):
    out, result = smoke_run
    assert result.step == 40 and len(result.losses) == 40
    assert np.mean(result.losses[-8:]) < 0.6 * np.mean(result.losses[:8])
    assert (out / "last.safetensors").exists() and (out / "log.png").exists()
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(row["step"]) for row in rows] == list(range(5, 41, 5))


def test_exported_ema_loads_with_upres_and_upscales(smoke_run):
    out, result = smoke_run
    assert result.export == out / "model.safetensors"
    for path in (out / "model.safetensors", out / "model.pth"):
        upscaler = upres.load(str(path))
        assert upscaler.scale == 2 and upscaler.architecture == "SwinIR"
        assert upscaler(np.full((20, 24, 3), 128, np.uint8)).shape == (40, 48, 3)
    wrapped = torch.load(out / "model.pth", weights_only=True)
    assert set(wrapped) == {"params"}  # the official wrapper


def test_checkpoint_holds_model_ema_optimizer_and_step(smoke_run):
    out, _ = smoke_run
    state = load_checkpoint(out / "last.safetensors")
    assert state.step == 40 and state.info["arch"] == "SwinIR"
    assert state.model.keys() == state.ema.keys()
    assert any(not torch.equal(state.model[k], state.ema[k]) for k in state.model)
    slots = state.optimizer["state"][0]
    assert {"step", "exp_avg", "exp_avg_sq"} <= set(slots) and float(slots["step"]) == 40
    with safe_open(str(out / "last.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()[META_KEY])["step"] == 40


def test_checkpoint_leaves_out_only_the_buffers_every_build_makes_alike(smoke_run):
    out, _ = smoke_run
    state = load_checkpoint(out / "last.safetensors")
    model = build_model(config_from_dict(tiny_config(out)).model, 2)
    rebuilt = {name for name, _ in model.named_buffers()}
    assert rebuilt, "SwinIR has index-table buffers"
    assert state.model.keys() == model.state_dict().keys() - rebuilt
    assert {name for name, _ in model.named_parameters()} <= state.model.keys()


def test_a_checkpoint_without_a_parameter_is_refused(smoke_run):
    from upres.train.loop import load_with_rebuilt_buffers

    out, _ = smoke_run
    saved = load_checkpoint(out / "last.safetensors").model
    model = build_model(config_from_dict(tiny_config(out)).model, 2)
    load_with_rebuilt_buffers(model, saved)  # the buffers left out come from the build
    parameter = next(name for name, _ in model.named_parameters())
    del saved[parameter]
    with pytest.raises(RuntimeError, match="Missing key"):
        load_with_rebuilt_buffers(model, saved)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    straight = train(config_from_dict(tiny_config(tmp_path / "a", steps=16)))
    first = train(config_from_dict(tiny_config(tmp_path / "b", steps=16)), stop_at=8)
    assert first.step == 8 and first.export is None  # stopped: no final export yet
    resumed_config = config_from_dict(
        tiny_config(tmp_path / "b", steps=16, model={"resume": str(first.checkpoint)})
    )
    second = train(resumed_config)
    assert second.step == 16 and len(second.losses) == 8
    np.testing.assert_allclose(first.losses + second.losses, straight.losses, rtol=1e-4)
    ema_a = load_checkpoint(tmp_path / "a" / "last.safetensors").ema
    ema_b = load_checkpoint(tmp_path / "b" / "last.safetensors").ema
    for key in ema_a:
        torch.testing.assert_close(ema_a[key], ema_b[key], rtol=1e-4, atol=1e-6)
    steps = [int(row["step"]) for row in csv.DictReader((tmp_path / "b" / "log.csv").open())]
    assert steps == [5, 10, 15, 16]  # the log continues; no duplicated rows


def test_validation_goes_through_evaluate_and_is_logged(tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    with Image.open(TRAIN_IMAGES / sorted(p.name for p in TRAIN_IMAGES.iterdir())[0]) as image:
        image.convert("RGB").crop((0, 0, 48, 48)).save(val / "one.png")
    raw = tiny_config(
        tmp_path / "run",
        steps=6,
        output={"validate_every": 3, "val_dataset": str(val)},
        train={
            "loss": "charbonnier",
            "fft_weight": 0.1,
            "bf16": True,
            "schedule": "multistep",
            "milestones": [4],
            "optimizer": "adamw",
            "grad_clip": 1.0,
        },
    )
    result = train(config_from_dict(raw))
    assert [v["step"] for v in result.validations] == [3, 6]
    assert all(np.isfinite(v["psnr_y"]) for v in result.validations)
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert rows[-1]["val_psnr_y"]


@pytest.mark.parametrize(
    ("kind", "scale", "lr_side"),
    [("bicubic", 4, 16), ("realworld", 4, 16), ("jpeg", 1, 64), ("noise", 1, 64)],
)
def test_degradations_make_inputs_of_the_right_size(kind, scale, lr_side):
    raw = tiny_config(Path("unused"), data={"degradation": kind, "scale": scale, "crop": 64})
    config = config_from_dict(raw)
    hr = np.random.default_rng(0).random((64, 64, 3))
    lr = degrade(hr, config.data, np.random.default_rng(1))
    assert lr.shape == (lr_side, lr_side, 3) and np.isfinite(lr).all()


def test_samples_depend_only_on_their_index():
    config = config_from_dict(tiny_config(Path("unused"))).data
    paths = find_images([TRAIN_IMAGES], 5)
    first, second = PairDataset(paths, config, 10), PairDataset(paths, config, 10)
    lr_a, hr_a = first[7]
    lr_b, hr_b = second[7]
    assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)
    assert hr_a.shape == (3, 32, 32) and lr_a.shape == (3, 16, 16)


def test_benchmark_folders_are_refused():
    with pytest.raises(ValueError, match="benchmark"):
        find_images([PROJECT_ROOT.parent / "shared" / "datasets" / "Set5"])


def test_schedules():
    config = config_from_dict(tiny_config(Path("x"), steps=100, train={"warmup_steps": 10}))
    cfg = config.train
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) < 0.01
    cfg.schedule, cfg.milestones, cfg.gamma = "multistep", [50, 80], 0.5
    assert [lr_factor(s, cfg) for s in (20, 50, 80)] == [1.0, 0.5, 0.25]


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="lerning_rate"):
        config_from_dict(tiny_config(tmp_path, train={"lerning_rate": 1.0}))
    with pytest.raises(ConfigError, match=r"data\.degradation"):
        config_from_dict(tiny_config(tmp_path, data={"degradation": "blurry"}))
    with pytest.raises(ConfigError, match=r"\[model\]"):
        config_from_dict({"train": {}})


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "configs").glob("*.toml")), ids=str)
def test_shipped_configs_parse_and_build(path):
    config = load_config(path)
    for folder in config.data.folders:
        assert config.resolve(folder).is_dir()
    # Building the network checks the kwargs against the architecture's signature.
    assert sum(p.numel() for p in build_model(config.model, config.data.scale).parameters())


def test_cli_trains_and_resumes(tmp_path):
    config = tmp_path / "tiny.toml"
    kwargs = "img_size = 16, window_size = 4, embed_dim = 8, depths = [1], num_heads = [1]"
    kwargs += ', mlp_ratio = 1.0, upsampler = "pixelshuffledirect", img_range = 1.0'
    config.write_text(
        f"""
[model]
arch = "SwinIR"
kwargs = {{ {kwargs} }}
[data]
folders = ["{TRAIN_IMAGES}"]
scale = 2
crop = 16
batch_size = 2
workers = 0
max_images = 3
[output]
log_every = 2
validate_every = 0
"""
    )
    runner = CliRunner()
    # Only `train` registered: this test is about that command, not the whole app.
    app = typer.Typer()
    app.command("noop")(lambda: None)  # with two commands typer keeps "train" as a subcommand
    train_command.register(app)
    out = tmp_path / "run"
    first = runner.invoke(app, ["train", str(config), "--steps", "2", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert (out / "model.safetensors").exists()
    again = runner.invoke(
        app,
        [
            "train",
            str(config),
            "--steps",
            "4",
            "--out",
            str(out),
            "--resume",
            str(out / "last.safetensors"),
        ],
    )
    assert again.exit_code == 0, again.output
    assert load_checkpoint(out / "last.safetensors").step == 4
    # A slice: a time budget already spent stops after the step in flight, with a checkpoint
    # that the next slice resumes.
    resume = ["--resume", str(out / "last.safetensors")]
    sliced = runner.invoke(
        app, ["train", str(config), "--steps", "8", "--out", str(out), "--minutes", "0", *resume]
    )
    assert sliced.exit_code == 0, sliced.output
    assert "time budget reached at step 4" in sliced.output
    assert load_checkpoint(out / "last.safetensors").step == 4
    bad = runner.invoke(app, ["train", str(tmp_path / "missing.toml")])
    assert bad.exit_code == 2


def test_plot_without_matplotlib_falls_back_to_pillow(tmp_path):
    from upres.train.plot import plot_pillow, read_series

    log = tmp_path / "log.csv"
    log.write_text("step,loss,lr,seconds,val_psnr_y,val_ssim_y\n10,0.2,,,,\n20,0.1,,,30.5,0.9\n")
    loss, psnr = read_series(log)
    assert loss == [(10.0, 0.2), (20.0, 0.1)] and psnr == [(20.0, 30.5)]
    plot_pillow(loss, psnr, tmp_path / "log.png")
    with Image.open(tmp_path / "log.png") as image:
        assert image.size == (800, 450)
