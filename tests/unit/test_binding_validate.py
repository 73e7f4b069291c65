"""The field rules of a binding: each bad value is a 422 naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from litho.binding.v1 import binding_pb2
from litho.errors import InvalidArgument
from litho.outbound import AllowList, check_outbound_headers
from services.binding._validate import (
    check_credentials,
    check_data_source,
    check_defaults,
    check_mapping_names,
    check_name,
    check_refresh_policy,
)

URL = "https://api.example.com/items?id=1"


def _fields(call: Any, *args: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        call(*args, **kwargs)
    assert caught.value.errors, "a 422 names its fields"
    return {e.field: e.message for e in caught.value.errors}


# --- name -------------------------------------------------------------------

def test_name() -> None:
    assert check_name("Price card") == "Price card"
    assert "required" in _fields(check_name, "  ")["name"]
    assert "200" in _fields(check_name, "x" * 201)["name"]
    assert "surrogate" in _fields(check_name, "a\ud800")["name"]
    assert "control" in _fields(check_name, "a\x00b")["name"]
    assert "string" in _fields(check_name, 5)["name"]


# --- data source ------------------------------------------------------------

def test_http_source_from_a_proto_is_normalised() -> None:
    ds = binding_pb2.DataSource(type="http", url=URL, method="post", headers={"X-A": "1"},
                                body='{"q":1}')
    assert check_data_source(ds) == {"type": "http", "url": URL, "method": "POST",
                                     "headers": {"X-A": "1"}, "body": '{"q":1}'}


def test_source_from_a_mapping_defaults_to_get() -> None:
    got = check_data_source({"type": "static", "url": URL}, path="ds")
    assert got == {"type": "static", "url": URL, "method": "GET", "headers": {}, "body": ""}


@pytest.mark.parametrize(("ds", "field", "words"), [
    ({"type": "ftp", "url": URL}, "dataSource.type", "http, static or push"),
    ({"url": URL}, "dataSource.type", "required"),
    ({"type": "http"}, "dataSource.url", "required"),
    ({"type": "http", "url": "ftp://x.example/a"}, "dataSource.url", "http://"),
    ({"type": "http", "url": "/relative"}, "dataSource.url", "http://"),
    ({"type": "http", "url": "http://a b.example/"}, "dataSource.url", "spaces"),
    ({"type": "http", "url": "http://127.0.0.1:8080/x"}, "dataSource.url",
     "LITHO_OUTBOUND_ALLOW"),
    ({"type": "http", "url": "http://localhost/x"}, "dataSource.url", "not allowed"),
    ({"type": "http", "url": "http://[::1]/x"}, "dataSource.url", "not allowed"),
    ({"type": "http", "url": "http://169.254.169.254/latest"}, "dataSource.url", "not allowed"),
    ({"type": "http", "url": "https://x.example/" + "a" * 2000}, "dataSource.url", "2000"),
    ({"type": "http", "url": "https://x.example/\ud800"}, "dataSource.url", "surrogate"),
    ({"type": "http", "url": URL, "method": "PUT"}, "dataSource.method", "GET or POST"),
    ({"type": "http", "url": URL, "body": "x"}, "dataSource.body", "POST"),
    ({"type": "http", "url": URL, "method": "POST", "body": "x" * 70000},
     "dataSource.body", "65536"),
    ({"type": "push", "url": URL}, "dataSource.url", "push"),
    ({"type": "http", "url": URL, "headers": {"Authorization": "Bearer x"}},
     "dataSource.headers.Authorization", "put secrets in credentials"),
    ({"type": "http", "url": URL, "headers": {"cookie": "a=1"}},
     "dataSource.headers.cookie", "credentials"),
    ({"type": "http", "url": URL, "headers": {"X-A": "a\r\nX-B: 1"}},
     "dataSource.headers.X-A", "CR, LF"),
    ({"type": "http", "url": URL, "headers": {"Bad Name": "1"}},
     "dataSource.headers.Bad Name", "RFC 7230"),
    ({"type": "http", "url": URL, "headers": {"X-A": "v" * 1001}},
     "dataSource.headers.X-A", "1000"),
    ({"type": "http", "url": URL, "headers": {f"X-{i}": "1" for i in range(21)}},
     "dataSource.headers", "at most 20"),
])
def test_bad_sources(ds: dict[str, Any], field: str, words: str) -> None:
    fields = _fields(check_data_source, ds)
    assert field in fields, fields
    assert words in fields[field]


def test_a_loopback_url_is_accepted_when_allow_listed() -> None:
    url = "http://127.0.0.1:8080/x"
    assert check_data_source({"type": "http", "url": url},
                             allow=AllowList.parse("127.0.0.1:8080"))["url"] == url
    assert "dataSource.url" in _fields(check_data_source, {"type": "http", "url": url},
                                       allow=AllowList.parse("127.0.0.1:9999"))


def test_push_source_needs_no_url() -> None:
    assert check_data_source({"type": "push"})["type"] == "push"


def test_all_problems_of_a_source_are_named_at_once() -> None:
    fields = _fields(check_data_source, {"type": "http", "url": "", "method": "DELETE"})
    assert set(fields) == {"dataSource.url", "dataSource.method"}


def test_outbound_headers_directly() -> None:
    assert check_outbound_headers({"X-Key": "v"}, path="h") == {"X-Key": "v"}
    for bad in ({"Host": "a"}, {"Content-Length": "1"}, {"Transfer-Encoding": "x"},
                {"Proxy-Authorization": "x"}, {"X-A": "1", "x-a": "2"}, {"": "x"},
                {"X\ud800": "x"}, {"X": "\x00"}):
        with pytest.raises(InvalidArgument):
            check_outbound_headers(bad, path="h")


# --- credentials ------------------------------------------------------------

def test_credentials_each_type() -> None:
    path = "dataSource.credentials"
    assert check_credentials(binding_pb2.Credentials(type="bearer", token="t"), path=path) == {
        "type": "bearer", "token": "t"}
    assert check_credentials({"type": "basic", "username": "u"}, path=path) == {
        "type": "basic", "username": "u", "password": ""}
    assert check_credentials(binding_pb2.Credentials(
        type="header", header_name="X-Api-Key", header_value="v"), path=path) == {
        "type": "header", "headerName": "X-Api-Key", "headerValue": "v"}


@pytest.mark.parametrize(("creds", "field", "words"), [
    ({"type": "oauth"}, "c.type", "bearer, basic or header"),
    ({}, "c.type", "required"),
    ({"type": "bearer"}, "c.token", "required"),
    ({"type": "bearer", "token": "a\nb"}, "c.token", "control"),
    ({"type": "basic", "password": "p"}, "c.username", "required"),
    ({"type": "basic", "username": "a:b"}, "c.username", "':'"),
    ({"type": "header", "headerValue": "v"}, "c.headerName", "required"),
    ({"type": "header", "headerName": "X Y", "headerValue": "v"}, "c.headerName", "token"),
    ({"type": "header", "headerName": "Host", "headerValue": "v"}, "c.headerName", "Litho"),
    ({"type": "header", "header_name": "X-K"}, "c.headerValue", "required"),
    ({"type": "bearer", "token": "t" * 5000}, "c.token", "4096"),
])
def test_bad_credentials(creds: dict[str, str], field: str, words: str) -> None:
    fields = _fields(check_credentials, creds, path="c")
    assert words in fields[field], fields


# --- refresh policy ---------------------------------------------------------

def _policy(rp: Any, source_type: str = "http") -> dict[str, Any]:
    return check_refresh_policy(rp, source_type=source_type, min_ttl=10,
                                min_cron_interval=300)


def test_policy_defaults() -> None:
    assert _policy({}) == {"type": "ttl", "ttlSeconds": 300, "cron": "",
                           "onError": "serve_stale"}
    assert _policy({}, "static")["type"] == "manual"
    assert _policy({}, "push")["type"] == "push"
    assert _policy(binding_pb2.RefreshPolicy(type="cron", cron="*/15  * * * *",
                                             on_error="serve_default")) == {
        "type": "cron", "ttlSeconds": 0, "cron": "*/15 * * * *", "onError": "serve_default"}
    assert _policy({"type": "ttl", "ttlSeconds": 10})["ttlSeconds"] == 10


@pytest.mark.parametrize(("rp", "source_type", "field", "words"), [
    ({"type": "hourly"}, "http", "refreshPolicy.type", "ttl, cron, push or manual"),
    ({"type": "ttl"}, "http", "refreshPolicy.ttlSeconds", "required"),
    ({"type": "ttl", "ttlSeconds": 9}, "http", "refreshPolicy.ttlSeconds",
     "LITHO_BINDING_MIN_TTL_SECONDS"),
    ({"type": "ttl", "ttlSeconds": 31 * 86400}, "http", "refreshPolicy.ttlSeconds", "30 days"),
    ({"type": "ttl", "ttlSeconds": -5}, "http", "refreshPolicy.ttlSeconds", "between"),
    ({"type": "ttl", "ttlSeconds": "60"}, "http", "refreshPolicy.ttlSeconds", "whole number"),
    ({"type": "cron", "cron": "* * * * *"}, "http", "refreshPolicy.cron",
     "LITHO_BINDING_MIN_CRON_INTERVAL"),
    ({"type": "cron"}, "http", "refreshPolicy.cron", "required"),
    ({"type": "push"}, "http", "refreshPolicy.type", "only for a push source"),
    ({"type": "ttl", "ttlSeconds": 60}, "push", "refreshPolicy.type", "must be push"),
    ({"type": "manual", "onError": "explode"}, "http", "refreshPolicy.onError", "serve_stale"),
    ({"type": "manual", "cron": "0 * * * *"}, "http", "refreshPolicy.cron", "only for"),
    ({"type": "manual", "ttlSeconds": 60}, "http", "refreshPolicy.ttlSeconds", "only for"),
])
def test_bad_policies(rp: dict[str, Any], source_type: str, field: str, words: str) -> None:
    fields = _fields(_policy, rp, source_type)
    assert words in fields[field], fields


# --- mapping ----------------------------------------------------------------

def test_good_mapping() -> None:
    check_mapping_names({"price": "items[0].price", "product.name": "name", "_x": "1"})


@pytest.mark.parametrize(("mapping", "field", "words"), [
    ({}, "mapping", "required"),
    ({f"v{i}": "1" for i in range(101)}, "mapping", "at most 100"),
    ({"1abc": "x"}, "mapping.1abc", "not a variable name"),
    ({"a..b": "x"}, "mapping.a..b", "not a variable name"),
    ({"a-b": "x"}, "mapping.a-b", "not a variable name"),
    ({"a\ud800": "x"}, "mapping.a\\ud800", "not a variable name"),
    ({"a": "x" * 2001}, "mapping.a", "2000"),
    ({"a": ""}, "mapping.a", "empty"),
    ({"a": "x\x00"}, "mapping.a", "control"),
    ({"a": "\ud800"}, "mapping.a", "surrogate"),
    ({"a": "1", "a.b": "2"}, "mapping.a.b", "conflicts with mapping.a"),
    ({"v" * 201: "1"}, "mapping." + "v" * 200, "200"),
])
def test_bad_mappings(mapping: dict[str, str], field: str, words: str) -> None:
    fields = _fields(check_mapping_names, mapping)
    assert words in fields[field], fields


def test_multiline_expressions_are_allowed() -> None:
    check_mapping_names({"a": "x\n  ? 1\n  : 2"})


# --- defaults ---------------------------------------------------------------

def test_defaults() -> None:
    assert check_defaults("") == {}
    assert check_defaults('{"price": 0, "name": "—"}') == {"price": 0, "name": "—"}


@pytest.mark.parametrize(("text", "field", "words"), [
    ("[1]", "defaults", "JSON object"),
    ("{", "defaults", "not valid JSON"),
    ("NaN", "defaults", "not valid JSON"),
    ('{"a": "' + "x" * 70000 + '"}', "defaults", "65536"),
    ('{"a": "\\ud800"}', "defaults.a", "surrogate"),
    ('{"a": ' + "[" * 40 + "]" * 40 + "}", "defaults.a" + ".0" * 31,
     "LITHO_BINDING_JSON_MAX_DEPTH"),
    ('{"n": 1' + "0" * 40 + "}", "defaults.n", "too large"),
])
def test_bad_defaults(text: str, field: str, words: str) -> None:
    fields = _fields(check_defaults, text)
    assert words in fields[field], fields


@pytest.mark.parametrize("url", [
    "https://user:pass@api.example.com/items",
    "https://user@api.example.com/items",
    "https://:pass@api.example.com/items",
])
def test_credentials_in_the_url_are_refused(url: str) -> None:
    message = _fields(check_data_source, {"type": "http", "url": url})["dataSource.url"]
    assert "put credentials in credentials" in message
    assert "pass" not in message.replace("password", "")  # the secret is not echoed


def test_an_at_sign_in_the_path_or_query_is_no_userinfo() -> None:
    url = "https://api.example.com/users/@me?mail=a@b.c"
    assert check_data_source({"type": "http", "url": url})["url"] == url


def test_a_header_credential_may_be_authorization_but_follows_the_shared_name_rules() -> None:
    assert check_credentials({"type": "header", "headerName": "Authorization",
                              "headerValue": "Token abc"}, path="c")["headerName"] == (
        "Authorization")
    # The shared rule (litho.outbound.check_outbound_headers) also bounds the length.
    assert "100" in _fields(check_credentials, {"type": "header", "headerName": "X" * 101,
                                                "headerValue": "v"}, path="c")["c.headerName"]
