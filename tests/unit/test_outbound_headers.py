"""litho.outbound.check_outbound_headers: the values a user may send."""

from __future__ import annotations

import pytest

from litho.errors import InvalidArgument
from litho.outbound import check_outbound_headers


@pytest.mark.parametrize("value", [
    "a\rb", "a\nb", "a\x00b", "a\x1fb", "a\x7fb",
    "a\x80b", "a\x85b", "a\x9fb",  # C1 controls, NEL among them
    "a\u2028b", "a\u2029b",  # line and paragraph separators
])
def test_a_control_or_line_separator_in_a_value_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_outbound_headers({"X-V": value}, path="headers")
    [error] = info.value.errors
    assert error.field == "headers.X-V"
    assert "control characters" in error.message


@pytest.mark.parametrize("value", [
    "a\tb", "plain ascii", "\xa0non-breaking", "é ü ß", "\u00ff", "\u2027\u202a", "☃ 🎉",
])
def test_tabs_and_other_text_are_kept(value: str) -> None:
    assert check_outbound_headers({"X-V": value}, path="headers") == {"X-V": value}


def test_every_bad_value_is_named() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_outbound_headers({"X-A": "\x85", "X-B": "ok", "X-C": "\u2028"}, path="h")
    assert [e.field for e in info.value.errors] == ["h.X-A", "h.X-C"]
