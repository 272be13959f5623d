"""The web page in a real headless Chromium: upload a photo crop, wait, compare, download.

Screenshots at laptop and phone width are kept in artifacts/page/ (committed, so a person
can look at them without running anything); the test prints their paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from conftest import CHROMIUM, PROJECT_ROOT
from server_support import fast_config, live_server

ARTIFACTS = PROJECT_ROOT / "artifacts" / "page"
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


def open_page(
    browser: object, base_url: str, viewport: dict, locale: str = "en-US"
) -> tuple[object, list[str]]:
    # The locale sets both Accept-Language and navigator.language, as a browser does.
    context = browser.new_context(viewport=viewport, locale=locale)
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
    """A full-page PNG, reduced to a 256-colour palette: a fraction of the size, same look."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as shot:
        rgb = shot.convert("RGB")
    palette = rgb.quantize(256, method=Image.Quantize.MEDIANCUT)
    # Dithered against that palette, the photo keeps its gradients (no posterised bands).
    rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
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
    screenshot(page, "page-en-1280.png")
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
    screenshot(page, "page-en-390.png")
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
