"""The HTML reports in a real browser: Debian's headless Chromium (installed by .ci/run).

Each report is opened from a file with every network feature of the browser off (the page
fetches nothing anyway: its policy forbids it). A screenshot must show content, the SVG
must have been laid out, and server text must not have run: the hostile greeting would
change the page's title if it did.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.report_lab import Dom, Lab, start_lab
from tests.test_report import BATCH, _batch

pytestmark = pytest.mark.interop

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-proxy-server",
    "--hide-scrollbars",
    "--mute-audio",
]
# The accepted session's bars in the light scheme (--c2 in the page's style).
GREEN = (0x1F, 0x8A, 0x4C)
DARK_BACKGROUND = (0x14, 0x18, 0x1C)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    yield from start_lab(str(tmp_path_factory.mktemp("browser")))


def chromium(page: Path, *args: str) -> str:
    assert CHROMIUM is not None
    profile = page.parent / f"profile-{page.stem}"
    p = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def screenshot(page: Path, size: str, *args: str) -> object:
    from PIL import Image

    png = page.with_suffix(f".{size}.png")
    chromium(page, f"--screenshot={png}", f"--window-size={size}", *args)
    return Image.open(png).convert("RGB")


def colours(image: object) -> dict[tuple[int, int, int], int]:
    found = image.getcolors(1 << 24)  # type: ignore[attr-defined]
    return {c: n for n, c in found}


def save(tmp: Path, name: str, html: str) -> Path:
    page = tmp / f"{name}.html"
    page.write_text(html, encoding="utf-8")
    return page


def test_probe_report_renders_with_its_waterfall(lab: Lab, tmp_path: Path) -> None:
    page = save(tmp_path, "accepted", lab.probe("accepted", "html")[1])
    seen = colours(screenshot(page, "1000,1200"))
    assert len(seen) > 50  # text, bars, badges: far from blank
    assert seen.get(GREEN, 0) > 500  # the 2xx bars (and badges) were painted
    dom = chromium(page, "--dump-dom")
    assert "<title>SMTP probe of alice@ok.test</title>" in dom
    assert dom.count('class="bar"') >= 7 and "<rect" in dom


def test_phone_width_and_dark_scheme(lab: Lab, tmp_path: Path) -> None:
    page = save(tmp_path, "grey", lab.probe("greylisted", "html")[1])
    dark = screenshot(page, "390,844", "--force-dark-mode")
    assert dark.getpixel((2, 2)) == DARK_BACKGROUND  # type: ignore[attr-defined]
    assert len(colours(dark)) > 50


def test_hostile_greeting_runs_nothing(lab: Lab, tmp_path: Path) -> None:
    page = save(tmp_path, "hostile", lab.probe("hostile", "html")[1])
    dom = chromium(page, "--dump-dom")
    assert "<title>SMTP probe of mallory@evil.test</title>" in dom
    assert "pwned</title>" not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # shown as text
    # The browser's own serialisation, read back: no element came from the server's text.
    tree = Dom(dom).root
    assert not tree.find("img") and not tree.find("script")
    assert all(a.attrs.get("href", "#").startswith("#") for a in tree.find("a"))
    assert len(colours(screenshot(page, "1000,900"))) > 50


def test_batch_report_renders(lab: Lab, tmp_path: Path) -> None:
    page = save(tmp_path, "batch", _batch(lab, "html", BATCH[::5])[1])
    dom = chromium(page, "--dump-dom")
    assert 'class="summary"' in dom and 'class="counts"' in dom
    seen = colours(screenshot(page, "1000,1000"))
    assert len(seen) > 50 and seen.get(GREEN, 0) > 100  # the "accepted" count bar
