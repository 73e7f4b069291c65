"""Chromium's switches: ours must not drop Playwright's disabled features."""

from __future__ import annotations

import re
from pathlib import Path

import playwright

from services.renderer import _chromium


def _playwright_disabled_features() -> set[str]:
    bundle = Path(playwright.__file__).parent / "driver" / "package" / "lib" / "coreBundle.js"
    match = re.search(r"disabledFeatures = \[(.*?)\]", bundle.read_text(), re.DOTALL)
    assert match, "Playwright's disabled-feature list moved: find it and update this test"
    return set(re.findall(r'^\s*"(\w+)"', match.group(1), re.MULTILINE))


def test_one_disable_features_switch_that_keeps_playwrights_list() -> None:
    # Chromium keeps only the last --disable-features; Playwright's comes first.
    ours = [a for a in _chromium.launch_args() if a.startswith("--disable-features=")]
    assert len(ours) == 1
    features = set(ours[0].removeprefix("--disable-features=").split(","))
    playwrights = _playwright_disabled_features()
    assert playwrights, "no features found in Playwright's list"
    assert playwrights <= features, sorted(playwrights - features)
    assert "SpareRendererForSitePerProcess" in features
