"""A real headless browser for the tests (pytest marker ``browser``): Debian's Chromium, which
``scripts/chromium.sh`` installs (scripts/test.sh runs it and exports ``FRAUDCEP_CHROMIUM``).
Without it the tests are skipped, except in CI (``CI`` set), where a missing browser fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

#: The flags a closed network needs (no background connections, no first-run or component
#: updates), and a fixed colour profile so that the screenshot's colours are the page's.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-color-profile=srgb",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The browser: ``FRAUDCEP_CHROMIUM``, else ``chromium`` on the PATH or /usr/bin/chromium."""
    given = os.environ.get("FRAUDCEP_CHROMIUM", "").strip()
    found = given or shutil.which("chromium") or "/usr/bin/chromium"
    if not (Path(found).is_file() and os.access(found, os.X_OK)):
        message = (
            f"no Chromium ({found}); run scripts/chromium.sh (as root: it installs Debian's "
            "chromium with apt-get)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def screenshot(page: Path, png: Path, *, width: int = 1200, height: int = 2000) -> None:
    """``page`` rendered by headless Chromium into ``png`` (``width`` x ``height`` pixels),
    with a fresh profile; fails the test with Chromium's output if no PNG comes out."""
    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="fraudcep-chromium-") as profile:
        try:
            proc = subprocess.run(
                [
                    browser,
                    *FLAGS,
                    f"--user-data-dir={profile}",
                    f"--screenshot={png}",
                    f"--window-size={width},{height}",
                    page.resolve().as_uri(),
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{browser} took more than {exc.timeout} s to render {page}")
    if proc.returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        pytest.fail(
            f"{browser} did not write {png} (exit {proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )


def pixels_of(image: Any, colour: tuple[int, int, int]) -> Any:
    """A mask of the screenshot's pixels of ``colour`` (within a few levels: rounding)."""
    import numpy as np

    rgb = np.rint(image[:, :, :3] * 255 if image.dtype.kind == "f" else image[:, :, :3])
    return np.all(np.abs(rgb - np.array(colour)) <= 6, axis=2)


def colour_rows(image: Any, colour: tuple[int, int, int], *, across: int = 20) -> Any:
    """The rows of the screenshot with ``across`` pixels of ``colour`` or more, in runs of 5
    rows or more: a bar (tens of pixels wide) or a line (a few), not a glyph of text."""
    import numpy as np

    ys = np.nonzero(pixels_of(image, colour).sum(axis=1) >= across)[0]
    runs = np.split(ys, np.nonzero(np.diff(ys) > 1)[0] + 1)
    return np.concatenate([r for r in runs if len(r) >= 5] or [ys[:0]])
