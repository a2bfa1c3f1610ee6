"""Regenerate docs/report.png: the HTML report (`--format html`) of a demo probe, drawn by
the current code and photographed by headless Chromium.

    python docs/make_screenshot.py          # needs chromium (apt-get install chromium)

The probe runs against the demo's loopback servers (`smtp-probe demo`): a normal MX with
STARTTLS and a certificate made for the occasion. Chromium opens the file with its network
features off; the report fetches nothing anyway.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from probe import aio
from probe.catalog import locale
from probe.demo import run_demo
from probe.render.html import probe_page

HERE = Path(__file__).resolve().parent
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-proxy-server",
    "--hide-scrollbars",
]


def main() -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("make_screenshot: chromium is not installed", file=sys.stderr)
        return 1
    results = aio.run(run_demo())
    greylisted = next(r for s, _, r in results if s.server == "grey")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(probe_page(greylisted, locale("en")), encoding="utf-8")
        out = HERE / "report.png"
        subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={tmp}/profile",
                f"--screenshot={out}",
                "--window-size=1000,1150",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
