from __future__ import annotations

import pytest

from litho.errors import InvalidArgument
from services.gateway import _signing as s


def test_canonical_request_sorts_encodes_and_drops_sig() -> None:
    params = [("title", "Hello World/é"), ("a", "2"), ("a", "1"), ("sig", "zz")]
    assert s.canonical_request("/r/tpl_x.png", params) == (
        "GET\n/r/tpl_x.png\na=1&a=2&title=Hello%20World%2F%C3%A9")


def test_sign_and_verify() -> None:
    params = [("title", "Hi"), ("kid", "kid_1")]
    sig = s.sign("secret", "/r/tpl_x.png", params)
    assert len(sig) == 64
    assert s.signature_matches("secret", "/r/tpl_x.png", params, sig)
    assert s.signature_matches("secret", "/r/tpl_x.png", list(reversed(params)), sig.upper())
    assert not s.signature_matches("other", "/r/tpl_x.png", params, sig)
    assert not s.signature_matches("secret", "/r/tpl_x.jpeg", params, sig)
    assert not s.signature_matches("secret", "/r/tpl_x.png", [("title", "Ho"), *params[1:]], sig)


def test_flatten_and_unflatten_round_trip() -> None:
    variables = {"user": {"name": "Ada", "meta": {"age": 36}}, "ok": True, "none": None}
    flat = s.flatten(variables)
    assert ("user.meta.age", "36") in flat and ("ok", "true") in flat
    assert s.unflatten([*flat, ("kid", "k"), ("sig", "x")]) == {
        "user": {"name": "Ada", "meta": {"age": "36"}}, "ok": "true", "none": ""}


@pytest.mark.parametrize("variables", [{"sig": "x"}, {"items": [1, 2]}])
def test_flatten_rejects_reserved_names_and_lists(variables: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        s.flatten(variables)


@pytest.mark.parametrize("params", [
    [("a.b", "1"), ("a", "2")], [("a", "2"), ("a.b", "1")], [("a..b", "1")],
    [("a.b.c.d.e.f", "1")], [(f"v{i}", "x") for i in range(101)],
])
def test_unflatten_rejects_conflicts_and_limits(params: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidArgument):
        s.unflatten(params)


def test_the_readme_signing_snippet_matches_the_server() -> None:
    from pathlib import Path
    from urllib.parse import parse_qsl, urlsplit

    readme = Path(__file__).resolve().parents[2] / "README.md"
    blocks = [b.split("```", 1)[0] for b in readme.read_text().split("```python\n")[1:]]
    block = next(b for b in blocks if "def signed_url" in b)
    namespace: dict[str, object] = {}
    exec(block, namespace)  # the documented helper, exactly as printed
    url = namespace["signed_url"](  # type: ignore[operator]
        "http://x", "tpl_1", "png", {"user.name": "Ada Lovelace", "n": 3}, "kid_1", "sek")
    parts = urlsplit(url)
    params = parse_qsl(parts.query)
    sig = dict(params)["sig"]
    assert s.signature_matches("sek", parts.path, params, sig)


def test_the_batch_webhook_secret_is_a_standard_secret_derived_from_the_signing_secret() -> None:
    from standardwebhooks.webhooks import Webhook

    from services.gateway._signing import batch_webhook_secret

    one = batch_webhook_secret("lss_one")
    assert one.startswith("whsec_") and one == batch_webhook_secret("lss_one")
    assert one != batch_webhook_secret("lss_two")
    assert "lss_one" not in one
    Webhook(one)  # the library takes it as it is
