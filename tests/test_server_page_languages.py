"""The web page in English and Simplified Chinese, in a real headless Chromium.

The language comes from the browser (Accept-Language, navigator.language), a switch on the
page overrides it and is remembered; every string of the page is translated, and the
service's refusals are shown by their stable `code` in the page's language with the
service's English `detail` below. Screenshots of both languages at 1280 and 390 px go to
artifacts/page/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import CHROMIUM, PROJECT_ROOT, tiny_compact
from server_support import fast_config, live_server
from test_server_page import LAPTOP, PHONE, open_page, screenshot, upscale
from upres.server.app import page_language

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)

SERVER = PROJECT_ROOT / "src" / "upres" / "server"
MESSAGES = json.loads((SERVER / "static" / "messages.json").read_text(encoding="utf-8"))
NOT_HERE = "swin2sr-classical-x4"  # a release download, never in the test cache
TIMES = "\u00d7"  # the page writes scales with the multiplication sign


def zh(key: str, **values: str) -> str:
    """A Chinese message as the page fills it in."""
    return MESSAGES["zh"][key].format(**values)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("page-models")
    torch.save({"params": tiny_compact(scale=2).state_dict()}, folder / "my-2x.pth")
    return folder


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[str]:
    config = fast_config(tmp_path_factory.mktemp("page-lang-data"), models_dir=models_dir)
    with live_server(config) as url:
        yield url


def translated_strings(page: object) -> dict[str, str]:
    """Every element's translatable text and attributes, keyed by message key."""
    return page.evaluate(
        """() => {
            const found = {};
            for (const e of document.querySelectorAll('[data-i18n]'))
                found[e.dataset.i18n] = e.textContent;
            for (const [attr, data] of [['placeholder', 'i18nPlaceholder'],
                    ['aria-label', 'i18nAriaLabel'], ['alt', 'i18nAlt']])
                for (const e of document.querySelectorAll(`[data-i18n-${attr}]`))
                    found[e.dataset[data]] = e.getAttribute(attr);
            return found;
        }"""
    )


def assert_all_in(page: object, lang: str) -> None:
    strings = translated_strings(page)
    assert strings, "no translatable strings found"
    for key, text in strings.items():
        assert text == MESSAGES[lang][key], key
    assert page.title() == MESSAGES[lang]["title"]


# --------------------------------------------------------------------------- no browser


def test_both_languages_have_every_message_and_every_service_code() -> None:
    assert set(MESSAGES["en"]) == set(MESSAGES["zh"])
    for key, english in MESSAGES["en"].items():
        placeholders = set(re.findall(r"\{(\w+)\}", english))
        assert placeholders == set(re.findall(r"\{(\w+)\}", MESSAGES["zh"][key])), key
        assert MESSAGES["zh"][key] != english or key in ("download",), key
    # Every code the service can answer with, found in its source, has a sentence.
    source = "\n".join(p.read_text() for p in SERVER.glob("*.py"))
    codes = set(re.findall(r'(?:ServiceError|limit_error)\(\s*\d+,\s*"([a-z_]+)"', source))
    codes |= set(re.findall(r'"error": "([a-z_]+)"', source))
    codes |= set(re.findall(r'\d+: "([a-z_]+)"', source))  # HTTP status -> code maps
    codes |= {f"job_{status}" for status in ("failed", "cancelled")}
    assert {"model_not_ready", "bad_image", "queue_full", "not_found"} <= codes
    for code in codes:
        assert f"error.{code}" in MESSAGES["en"], code
    for state in ("cached", "installed", "user", "download", "manual", "missing", "broken"):
        assert f"state.{state}" in MESSAGES["en"]


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("fr-FR, zh-TW;q=0.5", "zh"),
        ("de, en;q=0.1, zh;q=0.2", "zh"),
        ("zh;q=0", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_accept_language_picks_the_page_language(header: str | None, lang: str) -> None:
    assert page_language(header) == lang


# --------------------------------------------------------------------------- the page


def test_a_chinese_browser_gets_the_chinese_page(
    browser: object, base_url: str, bird: Path
) -> None:
    page, problems = open_page(browser, base_url, LAPTOP, locale="zh-CN")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert_all_in(page, "zh")
    assert "自动" in page.text_content("#model")
    assert "细节重建" in page.text_content(".switch-label")
    assert page.text_content("#detail-hint").startswith(zh("detail.on"))
    assert "不超过" in page.text_content("#drop-limits")

    result = upscale(page, bird)

    assert result["error"] is None
    assert (result["width"], result["height"]) == (96 * 4, 64 * 4)
    assert page.text_content("#status-text") == "完成。"
    assert page.text_content("#download") == "下载 PNG"
    screenshot(page, "page-zh-1280.png")
    assert problems == []
    page.context.close()


def test_the_chinese_page_at_phone_width(browser: object, base_url: str, bird: Path) -> None:
    page, problems = open_page(browser, base_url, PHONE, locale="zh-CN")
    page.click("label.switch")
    page.click("input[name=scale][value='2'] + span")
    assert page.text_content("#detail-hint").startswith(zh("detail.off"))
    result = upscale(page, bird)
    assert result["error"] is None and (result["width"], result["height"]) == (192, 128)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "page-zh-390.png")
    assert problems == []
    page.context.close()


def test_the_switch_changes_everything_and_is_remembered(browser: object, base_url: str) -> None:
    page, problems = open_page(browser, base_url, LAPTOP, locale="en-US")
    assert_all_in(page, "en")
    page.click("#lang button[data-lang='zh']")
    assert_all_in(page, "zh")
    assert page.get_attribute("#lang button[data-lang='zh']", "aria-pressed") == "true"
    groups = page.eval_on_selector_all("#model optgroup", "gs => gs.map(g => g.label)")
    assert "你的模型" in groups and groups[-1] == "本服务器上不可用"
    page.reload()  # an English browser, but the person chose Chinese
    page.wait_for_selector("#model optgroup", state="attached")
    assert_all_in(page, "zh")
    page.click("#lang button[data-lang='en']")
    assert_all_in(page, "en")
    page.reload()
    page.wait_for_selector("#model optgroup", state="attached")
    assert_all_in(page, "en")
    assert problems == []
    page.context.close()


def test_models_that_are_not_ready_are_greyed_last_with_their_reason(
    browser: object, base_url: str
) -> None:
    page, _ = open_page(browser, base_url, LAPTOP, locale="en-US")
    options = page.eval_on_selector_all(
        "#model optgroup",
        """groups => groups.map(g => [g.label, [...g.children].map(o =>
            ({value: o.value, text: o.textContent, disabled: o.disabled, title: o.title}))])""",
    )
    labels = [label for label, _ in options]
    assert labels[0] == "Your models" and labels[-1] == "Not available on this server"
    ready = [o for _, members in options[:-1] for o in members]
    greyed = options[-1][1]
    assert ready and not any(o["disabled"] for o in ready)
    assert greyed and all(o["disabled"] for o in greyed)
    swin2sr = next(o for o in greyed if o["value"] == NOT_HERE)
    assert swin2sr["text"] == f"{NOT_HERE} ({TIMES}4) — needs a download"
    assert swin2sr["title"] == "needs a download"
    assert any(o["value"] == "my-2x" for o in options[0][1])
    page.click("#lang button[data-lang='zh']")
    text = page.eval_on_selector(f"#model option[value='{NOT_HERE}']", "o => o.textContent")
    assert text == f"{NOT_HERE} ({TIMES}4) — 需要下载"
    page.evaluate("localStorage.clear()")
    page.context.close()


def test_service_refusals_are_translated_by_code(
    browser: object, base_url: str, models_dir: Path, bird: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    page, _ = open_page(browser, base_url, LAPTOP, locale="zh-CN")
    page.set_input_files("#file", str(broken))
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    # Not a PNG inside: the service's `unsupported_format`, in Chinese, naming the file.
    assert page.text_content("#error-text") == zh("error.unsupported_format", name="broken.png")
    detail = page.text_content("#error-detail")  # the service's English detail, kept below
    assert detail == zh("error.server_said", detail=page.evaluate("state.error.detail"))
    assert "broken.png" in detail and "服务器原文" in detail

    # A model of the folder that broke after the page listed it: refused at submit (409).
    page.select_option("#model", "my-2x")
    (models_dir / "my-2x.pth").write_bytes(b"no longer a checkpoint")
    page.set_input_files("#file", str(bird))
    page.wait_for_selector("#go:not([disabled])")
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    expected = zh("error.model_not_ready", model="my-2x", state=zh("state.broken"))
    assert page.text_content("#error-text") == expected
    assert "模型 my-2x" in expected and "文件无法使用" in expected
    page.click("#lang button[data-lang='en']")  # the shown error follows the switch
    assert page.text_content("#error-text") == (
        "The model my-2x is not ready on this server: the file cannot be used."
    )
    assert "model 'my-2x' is not ready" in page.text_content("#error-detail")
    page.evaluate("localStorage.clear()")
    page.context.close()
