"""`upres models`: the state column first and whole at 80 columns, every name uncut, and
`--available` listing only what runs here now (checked against a cache we control)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from upres.models.catalog import CATALOG
from upres.models.sources import NcnnPackageSource
from upres.models.state import READY, card_state

SRC = Path(__file__).resolve().parents[1] / "src"


def upres_models(*args: str, columns: int = 80, cache: Path | None = None) -> str:
    env = os.environ | {"PYTHONPATH": str(SRC), "COLUMNS": str(columns)}
    if cache is not None:
        env["UPRES_CACHE_DIR"] = str(cache)
    done = subprocess.run(
        [sys.executable, "-m", "upres", "models", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("columns", [80, 100, 160])
def test_state_comes_first_and_names_are_whole(columns):
    listing = upres_models(columns=columns)
    lines = listing.splitlines()
    header = next(line for line in lines if "name" in line and "state" in line)
    assert header.split()[:2] == ["state", "name"]
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    states = {"cached", "offline", "download", "by hand"}
    # A row starts with its state; wrapped description lines start with other words.
    cells = [re.match(r"\s*(by hand|\S+)\s+(\S+)", line) for line in lines]
    rows = {cell[2]: cell[1] for cell in cells if cell and cell[1] in states}
    for name in CATALOG:
        assert name in rows, f"{name} cut or missing at {columns} columns"
    assert {rows[name] for name in CATALOG} <= states
    if columns >= 160:
        assert "license" in header and "Apache-2.0" in listing


def test_available_lists_exactly_what_runs_without_a_network(tmp_path):
    empty = tmp_path / "cache"
    rows = json.loads(upres_models("--json", cache=empty))
    states = {row["name"]: row["state"] for row in rows}
    offline = {c.name for c in CATALOG.values() if isinstance(c.source, NcnnPackageSource)}
    offline.add("bicubic")  # no weights at all: made on first use
    assert {name for name, state in states.items() if state == "installed"} == offline
    assert states["swinir-classical-x4"] == "download"
    assert states["hat-x4"] == "manual"
    available = json.loads(upres_models("--available", "--json", cache=empty))
    assert {row["name"] for row in available} == offline
    assert all(row["available"] and row["state"] in READY for row in available)

    # A file put into the cache by hand makes its model runnable now.
    (empty / "models").mkdir(parents=True)
    (empty / "models" / "HAT_SRx4.pth").write_bytes(b"weights")
    available = json.loads(upres_models("--available", "--json", cache=empty))
    assert "hat-x4" in {row["name"] for row in available}
    table = upres_models("--available", cache=empty)
    assert "hat-x4" in table and "swinir-classical-x4" not in table


def test_a_blended_model_is_only_as_ready_as_its_partner(tmp_path, monkeypatch):
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    general = CATALOG["realesr-general-v3-x4"]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "realesr-general-x4v3.pth").write_bytes(b"x")
    assert card_state(general) == "download"  # the weak-denoise set is still missing
    (tmp_path / "models" / "realesr-general-wdn-x4v3.pth").write_bytes(b"x")
    assert card_state(general) == "cached"


def test_listing_rows_carry_the_other_names():
    rows = json.loads(upres_models("--json"))
    row = next(r for r in rows if r["name"] == "realesrgan-x4plus")
    assert "RealESRGAN_x4plus" in row["also_known_as"]
