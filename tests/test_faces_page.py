"""The page's "Restore faces" toggle in a real headless Chromium, against a live server whose
face model (the default's card, pointed at a loopback release server) is a tiny network."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from server_support import fast_config, live_server
from test_faces import (  # noqa: F401
    face_file,
    release_server,
    serve_card,
)
from test_server_page import CHROMIUM, LAPTOP, open_page, upscale
from upres.metrics.datasets import datasets_root

ROOT = datasets_root()
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium"),
    pytest.mark.skipif(ROOT is None, reason="benchmark datasets not found"),
]


@pytest.mark.slow  # a browser, a live server and a model conversion: about a minute
def test_the_face_toggle_sends_face_on_and_restores_the_face(
    browser: object,
    release_server,  # noqa: F811
    face_file: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    base, files = release_server
    serve_card(monkeypatch, files, base, "gfpgan-v1.4", face_file.read_bytes())
    assert ROOT is not None
    woman = tmp_path / "woman.png"
    with Image.open(ROOT / "Set5/HR/woman.png") as image:
        image.crop((0, 0, 200, 240)).save(woman)  # the face, and small enough to be quick
    with live_server(fast_config(tmp_path / "data")) as url:
        page, problems = open_page(browser, url, LAPTOP)
        assert not page.is_checked("#face")  # off by default
        page.click("label.switch:has(#face)")
        assert page.is_checked("#face")
        page.click("input[name=scale][value='2'] + span")
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.post_data or "") if r.method == "POST" else 0)
        result = upscale(page, woman)
        assert result["error"] is None
        assert (result["width"], result["height"]) == (400, 480)
        assert any('name="face"\r\n\r\non' in body for body in sent)
        assert problems == []
        page.context.close()
