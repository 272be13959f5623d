"""The page's exact size in a real headless Chromium: a width, height or long side instead
of a scale, the expected result size shown before the run, checked in the page, and the
service's refusal shown in the page's language."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from conftest import CHROMIUM
from server_support import fast_config, live_server
from test_server_page import LAPTOP, PHONE, open_page, screenshot, upscale
from test_server_page_languages import MESSAGES, assert_all_in, zh

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)

SIZE_KEYS = ["size.label", "size.exact", "size.long_side", "size.width", "size.height"]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = fast_config(tmp_path_factory.mktemp("page-size-data"))
    with live_server(config) as url:
        yield url


def ask_exact(page: object, pixels: str, side: str) -> None:
    page.click("input[name=size-mode][value='exact'] + span")
    page.fill("#exact-pixels", pixels)
    page.select_option("#exact-side", side)


def test_exact_long_side_gives_exactly_that_size(
    browser: object, base_url: str, bird: Path, tmp_path: Path
) -> None:
    page, problems = open_page(browser, base_url, LAPTOP)
    assert page.is_hidden("#exact-choice") and page.is_visible("#scale-choice")
    page.set_input_files("#file", str(bird))  # 96x64
    page.wait_for_function("document.getElementById('size-hint').textContent !== ''")
    assert page.text_content("#size-hint") == "Result: 384\u00d7256 px"  # the 4x default
    ask_exact(page, "200", "long_side")
    assert page.is_hidden("#scale-choice") and page.is_visible("#exact-choice")
    assert page.text_content("#size-hint") == "Result: 200\u00d7133 px"
    page.select_option("#exact-side", "height")
    assert page.text_content("#size-hint") == "Result: 300\u00d7200 px"
    page.select_option("#exact-side", "long_side")

    result = upscale(page, bird)

    assert result["error"] is None
    assert max(result["width"], result["height"]) == 200
    assert (result["width"], result["height"]) == (200, 133)  # aspect kept
    assert "96\u00d764 \u2192 200\u00d7133" in result["meta"]
    assert result["download"] == "bird-crop_200x133.png"
    screenshot(page, "page-en-size-1280.png")

    # Not a positive whole number: said at once, and nothing is sent.
    for bad in ("0", "1.5", ""):
        page.fill("#exact-pixels", bad)
        assert page.text_content("#size-hint") == MESSAGES["en"]["size.invalid"], bad
        assert page.get_attribute("#exact-pixels", "aria-invalid") == "true"
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url))
    page.click("#go")
    assert page.text_content("#error-text") == MESSAGES["en"]["size.invalid"]
    assert not any("/v1/jobs" in url for url in sent)
    # Beyond the server's limits (from /healthz): said before sending, too.
    page.fill("#exact-pixels", "6000")
    assert page.text_content("#size-hint") == (
        "6000\u00d74000 px needs 62.5\u00d7 enlargement, more than this server allows"
        " (16\u00d7); choose a smaller size."
    )
    large = tmp_path / "large.png"
    Image.new("RGB", (1200, 800), (90, 120, 150)).save(large)
    page.set_input_files("#file", str(large))
    page.wait_for_function("document.getElementById('size-hint').textContent.includes('16.8')")
    # Reduced to 1024x683 first (max_input_size), as the service does: 6000x4002, not 4000.
    assert page.text_content("#size-hint") == (
        "6000\u00d74002 px is more than this server makes (at most 16.8 megapixels);"
        " choose a smaller size."
    )
    page.click("#go")
    assert page.text_content("#error-text") == page.text_content("#size-hint")
    assert not any("/v1/jobs" in url for url in sent)
    assert problems == []
    page.context.close()


def test_the_chinese_page_at_phone_width_and_a_refusal_by_the_service(
    browser: object, base_url: str, bird: Path, tmp_path: Path
) -> None:
    page, problems = open_page(browser, base_url, PHONE, locale="zh-CN")
    ask_exact(page, "150", "width")
    assert_all_in(page, "zh")  # every new label and option, translated
    shown = {key: page.text_content(f"[data-i18n='{key}']") for key in SIZE_KEYS}
    assert shown == {key: MESSAGES["zh"][key] for key in SIZE_KEYS}
    assert shown["size.exact"] == "精确尺寸"
    page.set_input_files("#file", str(bird))
    page.wait_for_function("document.getElementById('size-hint').textContent !== ''")
    assert page.text_content("#size-hint") == zh("size.result", width="150", height="100")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "page-zh-size-390.png")

    # A TIFF this browser cannot preview: the page cannot know the result's size, so the
    # service refuses it (422 scale_too_large), in Chinese with its English detail below.
    tiff = tmp_path / "bird.tiff"
    with Image.open(bird) as image:
        image.save(tiff)
    page.fill("#exact-pixels", "90000")
    page.set_input_files("#file", str(tiff))
    page.wait_for_selector("#go:not([disabled])")
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert page.text_content("#error-text") == zh("error.scale_too_large")
    assert "scale 937.5 is too large" in page.text_content("#error-detail")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert problems == [] or all("422" in problem for problem in problems)
    page.context.close()
