"""The commands that only describe (help, version, the model list) start without loading
torch, spandrel, OpenCV or the server: each runs in a fresh interpreter that then reports
which of those modules it imported. (Timings are in benchmarks/startup.py, not here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "torchvision", "spandrel", "cv2", "fastapi", "uvicorn", "starlette", "av")

# Runs `upres ARGS...` in this interpreter, then prints the heavy modules it imported.
RUN_AND_REPORT = f"""
import json, runpy, sys
sys.argv = ["upres", *sys.argv[1:]]
try:
    runpy.run_module("upres", run_name="__main__")
except SystemExit as done:
    code = done.code
else:
    code = 0
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
server = sorted(m for m in sys.modules if m.startswith("upres.server"))
print("\\n" + json.dumps({{"code": code, "heavy": heavy, "server": server}}))
"""

COMMANDS = [
    ["--version"],
    ["--help"],
    ["models"],
    ["models", "--json"],
    ["models", "--available"],
    ["models", "info", "dat-light-x4"],
    ["models", "info", "RealESRGAN_x4plus", "--json"],
    ["models", "info", "no-such-model"],
    ["models", "fetch", "--help"],
    ["upscale", "--help"],
    ["upscale", "--face-enhance", "--help"],
    ["restore", "--help"],
    ["batch", "--help"],
    ["serve", "--help"],
    ["eval", "--help"],
    ["bench", "--help"],
    ["train", "--help"],
]


def imported_by(args: list[str]) -> dict:
    env = os.environ | {"PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["COLUMNS"] = "80"
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"stderr": done.stderr}


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_describing_commands_import_no_torch_opencv_or_server(args):
    report = imported_by(args)
    assert report["heavy"] == [], report
    assert report["server"] == [], report
    assert report["code"] in (0, None, 2), report["stderr"]  # 2: the unknown model


def test_import_upres_is_light_and_load_still_there():
    code = (
        "import sys, upres, upres.models.catalog as c, upres.models.state as s\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'torch', 'cv2', 'spandrel'}\n"
        "assert not heavy, heavy\n"
        "assert [s.card_state(card) for card in c.CATALOG.values()]\n"
        "assert s.model_states()\n"
        "assert callable(upres.load) and 'torch' in sys.modules\n"
        "assert upres.Upscaler.__name__ == 'Upscaler'\n"
    )
    env = os.environ | {"PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_serve_env_prefix_matches_the_server_config():
    from upres.cli.serve import ENV_PREFIX
    from upres.server.config import ENV_PREFIX as SERVER_PREFIX

    assert ENV_PREFIX == SERVER_PREFIX


def test_batch_engines_match_the_driver():
    from upres.batch.driver import ENGINES as DRIVER_ENGINES
    from upres.cli.batch import ENGINES

    assert ENGINES == DRIVER_ENGINES
