"""The start-up font check: behind a fake fc-list, and with the real one (all here, some hidden)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from services import browser_setup
from services.renderer._fonts_check import (
    SCRIPTS,
    FontLister,
    check_fonts,
    fc_list,
    missing_packages,
    missing_scripts,
    warn_missing_fonts,
)


def lister_without(*langs: str) -> tuple[list[str], FontLister]:
    """A fake fc-list with a font for every language tag but ``langs``; records its calls."""
    asked: list[str] = []

    def lister(lang: str) -> Sequence[str]:
        asked.append(lang)
        return [] if lang in langs else ["Some Font"]

    return asked, lister


def test_every_script_of_the_issue_is_checked() -> None:
    assert [s.name for s in SCRIPTS] == [
        "Latin", "Japanese", "Chinese", "Korean", "Arabic", "Hebrew", "Devanagari", "Thai",
        "colour emoji"]


def test_missing_scripts_name_their_packages() -> None:
    asked, lister = lister_without("ja", "zh-cn", "ko", "th", "und-zsye")
    missing = missing_scripts(lister)
    assert missing == [
        ("Japanese", "fonts-noto-cjk"), ("Chinese", "fonts-noto-cjk"),
        ("Korean", "fonts-noto-cjk"), ("Thai", "fonts-noto-core"),
        ("colour emoji", "fonts-noto-color-emoji")]
    assert asked == [s.lang for s in SCRIPTS]
    assert missing_packages(missing) == [
        "fonts-noto-cjk", "fonts-noto-core", "fonts-noto-color-emoji"]


def test_nothing_missing_is_an_empty_list() -> None:
    _, lister = lister_without()
    assert missing_scripts(lister) == []
    assert missing_packages([]) == []


def test_a_missing_script_is_one_warning_naming_script_and_package() -> None:
    _, lister = lister_without("hi", "ko")
    with capture_logs() as logs:
        missing = check_fonts(lister)
    assert missing == [("Korean", "fonts-noto-cjk"), ("Devanagari", "fonts-noto-core")]
    assert len(logs) == 1
    (entry,) = logs
    assert entry["log_level"] == "warning"
    assert "no font for Korean, Devanagari" in entry["event"]
    assert "apt-get install fonts-noto-cjk fonts-noto-core" in entry["event"]
    assert entry["missing"] == ["Korean: fonts-noto-cjk", "Devanagari: fonts-noto-core"]


def test_all_present_logs_nothing() -> None:
    _, lister = lister_without()
    with capture_logs() as logs:
        assert check_fonts(lister) == []
    assert logs == []


def test_a_failing_fc_list_is_a_warning_not_a_crash() -> None:
    def broken(lang: str) -> Sequence[str]:
        raise FileNotFoundError("fc-list")

    def failing(lang: str) -> Sequence[str]:
        raise subprocess.CalledProcessError(1, ["fc-list"])

    for lister in (broken, failing):
        with capture_logs() as logs:
            assert check_fonts(lister) == []
        assert [e["log_level"] for e in logs] == ["warning"]
        assert "fontconfig" in logs[0]["event"]


def test_real_fc_list_finds_a_font_for_every_script() -> None:
    # `make install` (services/browser_setup.py) installs them all on this machine.
    assert fc_list("en")
    assert "Noto Color Emoji" in fc_list("und-zsye")
    assert fc_list("x-no-such-language") == []
    assert missing_scripts() == []


async def test_the_start_up_check_logs_nothing_here() -> None:
    with capture_logs() as logs:
        assert await warn_missing_fonts() == []
    assert logs == []


async def test_the_start_up_check_asks_for_every_script_and_reports_as_check_fonts() -> None:
    asked, lister = lister_without("th")
    with capture_logs() as logs:
        assert await warn_missing_fonts(lister) == [("Thai", "fonts-noto-core")]
    assert sorted(asked) == sorted(s.lang for s in SCRIPTS)
    assert len(logs) == 1 and "no font for Thai" in logs[0]["event"]

    def broken(lang: str) -> Sequence[str]:
        raise FileNotFoundError("fc-list")

    with capture_logs() as logs:
        assert await warn_missing_fonts(broken) == []
    assert [e["log_level"] for e in logs] == ["warning"]


#: The system's fontconfig, minus the CJK, Thai and colour emoji fonts.
WITHOUT_SOME = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <include>/etc/fonts/fonts.conf</include>
  <selectfont><rejectfont>
    <glob>*CJK*</glob><glob>*Thai*</glob><glob>*ColorEmoji*</glob>
  </rejectfont></selectfont>
</fontconfig>
"""


def test_real_fc_list_without_some_fonts_finds_them_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "fonts.conf"
    conf.write_text(WITHOUT_SOME)
    monkeypatch.setenv("FONTCONFIG_FILE", str(conf))
    assert missing_scripts() == [
        ("Japanese", "fonts-noto-cjk"), ("Chinese", "fonts-noto-cjk"),
        ("Korean", "fonts-noto-cjk"), ("Thai", "fonts-noto-core"),
        ("colour emoji", "fonts-noto-color-emoji")]
    # `make browser` would install exactly these packages.
    assert browser_setup._missing_fonts() == [
        "fonts-noto-cjk", "fonts-noto-core", "fonts-noto-color-emoji"]
