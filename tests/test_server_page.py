"""The web page in a real headless Chromium: upload a photo crop, wait, compare, download.

Screenshots at laptop and phone width are kept in artifacts/ (git-ignored) for a person
to look at; the test prints their paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATASETS, PROJECT_ROOT
from server_support import fast_config, live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "artifacts"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = fast_config(tmp_path_factory.mktemp("page-data"))
    with live_server(config) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def bird(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96x64 crop of Set5's bird (its eye and beak), written to the test's own folder."""
    with Image.open(DATASETS / "Set5" / "HR" / "bird.png") as image:
        pixels = np.asarray(image.convert("RGB"))[20:84, 136:232]
    path = tmp_path_factory.mktemp("page-input") / "bird-crop.png"
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
    return path


def open_page(browser: object, base_url: str, viewport: dict) -> tuple[object, list[str]]:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    # Only this server is ever contacted: anything else is a test failure, not a fetch.
    page.route(
        lambda url: not url.startswith(base_url),
        lambda route: (problems.append(f"outside request {route.request.url}"), route.abort()),
    )
    page.goto(base_url + "/")
    page.wait_for_selector("#model optgroup", state="attached")
    return page, problems


def upscale(page: object, image: Path) -> dict:
    page.set_input_files("#file", str(image))
    page.wait_for_selector("#go:not([disabled])")
    page.click("#go")
    page.wait_for_selector("#result-bar:not([hidden])", timeout=90_000)
    return page.evaluate(
        """() => ({
            width: document.getElementById('after').naturalWidth,
            height: document.getElementById('after').naturalHeight,
            download: document.getElementById('download').getAttribute('download'),
            href: document.getElementById('download').href,
            meta: document.getElementById('meta').textContent,
            error: document.getElementById('error').hidden ? null
                : document.getElementById('error').textContent,
        })"""
    )


def screenshot(page: object, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_page_upscales_a_photo_at_laptop_width(browser: object, base_url: str, bird: Path) -> None:
    page, problems = open_page(browser, base_url, LAPTOP)
    assert page.title().startswith("upres")
    assert page.is_checked("#detail")  # detail reconstruction on by default
    assert page.is_checked("input[name=scale][value='4']")

    result = upscale(page, bird)

    assert result["error"] is None
    assert (result["width"], result["height"]) == (96 * 4, 64 * 4)
    assert result["download"] == "bird-crop_x4.png"
    assert result["href"].startswith("blob:")
    assert "96\u00d764 \u2192 384\u00d7256" in result["meta"]  # typographic times and arrow
    # The comparison slider moves the split between before and after.
    page.fill("#slider", "25")
    assert page.eval_on_selector("#compare", "e => e.style.getPropertyValue('--pos')") == "25%"
    page.fill("#slider", "50")
    screenshot(page, "server-page-laptop.png")
    assert problems == []
    page.context.close()


def test_page_at_phone_width_with_options(browser: object, base_url: str, bird: Path) -> None:
    page, problems = open_page(browser, base_url, PHONE)
    page.click("label.switch")  # detail reconstruction off: the faithful model
    assert not page.is_checked("#detail")
    page.click("input[name=scale][value='2'] + span")
    page.fill("#sharpen", "0.3")
    assert page.text_content("#sharpen-value") == "0.30"

    result = upscale(page, bird)

    assert result["error"] is None
    assert (result["width"], result["height"]) == (192, 128)
    assert result["download"] == "bird-crop_x2.png"
    # Nothing wider than the phone: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "server-page-phone.png")
    assert problems == []
    page.context.close()


def test_page_reports_a_refused_file(
    browser: object, base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    broken = tmp_path_factory.mktemp("page-bad") / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    page, _ = open_page(browser, base_url, LAPTOP)
    page.set_input_files("#file", str(broken))
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "broken.png" in page.text_content("#error")
    assert "broken.png" in page.text_content("#drop-text")  # named even with no preview
    assert page.is_hidden("#compare") and page.is_hidden("#status")
    page.context.close()


def test_page_asks_for_the_api_key_when_the_server_needs_one(
    browser: object, bird: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = fast_config(tmp_path_factory.mktemp("page-key"), api_key="page-key-123")
    with live_server(config) as url:
        context = browser.new_context(viewport=LAPTOP)
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#key-field:not([hidden])")
        page.set_input_files("#file", str(bird))
        assert page.is_disabled("#go")  # no key yet
        page.fill("#api-key", "page-key-123")
        page.press("#api-key", "Enter")
        page.wait_for_selector("#model optgroup", state="attached")
        page.wait_for_selector("#go:not([disabled])")
        page.click("#go")
        page.wait_for_selector("#result-bar:not([hidden])", timeout=90_000)
        width = page.eval_on_selector("#after", "image => image.naturalWidth")
        assert width == 96 * 4
        context.close()
