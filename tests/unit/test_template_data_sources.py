"""Data sources declared on a template: validated on save, stored with each
version, and the two-phase ExpandTemplate (first the sources to fetch, then
the document with their data under ``data``).

Uses the real service class over the embedded SQLite document store, and the
servicer's translation functions for the wire shapes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from litho.datasources import source_key
from litho.docstore import open_document_store
from litho.errors import InvalidArgument
from litho.outbound import AllowList
from litho.template.v1 import template_pb2 as pb
from services.template._data_sources import parse_data_sources
from services.template._lang import Engine, LangExpander, outside_tags
from services.template._lang import Limits as LangLimits
from services.template._model import Limits, Spec
from services.template._service import Templates
from services.template._servicer import TemplateServicer, spec_from_proto, template_to_proto
from services.template._settings import TemplateSettings
from services.template._store import TemplateRepository

MAX_VARIABLES = 8 * 1024
MAX_DATA = 32 * 1024
INVENTORY = {"name": "inventory", "url": "https://api.example.com/items/{{ sku }}"}
HTML = "<p>{{ data.inventory.price }} {{ sku }}</p>"


def _service(repo: TemplateRepository, *, max_sources: int = 5,
             lang: LangLimits | None = None) -> Templates:
    limits = Limits(max_html_bytes=512 * 1024, max_dimension=5000,
                    max_variables_bytes=MAX_VARIABLES, max_output_bytes=2 * 1024 * 1024,
                    max_data_sources=max_sources, max_data_bytes=MAX_DATA)
    return Templates(repo, LangExpander(Engine(lang)), limits, max_pattern_input=10_000,
                     expand_timeout=5.0)


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[TemplateRepository]:
    store = await open_document_store(f"sqlite:///{tmp_path}/t.db", "litho")
    repository = TemplateRepository(store, version_cache_size=0)  # read what was stored
    await repository.prepare()
    try:
        yield repository
    finally:
        await store.close()


@pytest.fixture
def templates(repo: TemplateRepository) -> Templates:
    return _service(repo)


async def create(templates: Templates, sources: Any, html: str = HTML,
                 **spec: Any) -> str:
    fields: dict[str, Any] = {"name": "t", "width": 100, "height": 100, **spec}
    created = await templates.create("t1", Spec(html=html, data_sources=sources, **fields))
    return created.id


async def refused(templates: Templates, sources: Any, **spec: Any) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        await create(templates, sources, **spec)
    return {e.field: e.message for e in info.value.errors}


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize(("sources", "field", "says"), [
    ({"name": "x"}, "dataSources", "array"),
    ([INVENTORY] * 0 + [dict(INVENTORY, name=f"s{i}") for i in range(6)], "dataSources",
     "LITHO_TEMPLATE_MAX_DATA_SOURCES"),
    (["https://x"], "dataSources[0]", "object"),
    ([dict(INVENTORY, name="1st")], "dataSources[0].name", "name"),
    ([dict(INVENTORY, name="a" * 65)], "dataSources[0].name", "64"),
    ([dict(INVENTORY, name="my-source")], "dataSources[0].name", "name"),
    ([{"name": "x"}], "dataSources[0].url", "required"),
    ([dict(INVENTORY, url="ftp://example.com/x")], "dataSources[0].url", "http"),
    ([dict(INVENTORY, url="{{ base }}/items")], "dataSources[0].url", "http"),
    ([dict(INVENTORY, url="//example.com/{{ sku }}")], "dataSources[0].url", "http"),
    ([dict(INVENTORY, url="https://x/{{ sku + }}")], "dataSources[0].url", "line 1, column"),
    ([dict(INVENTORY, url="https://x/{{ upper(sku) }}")], "dataSources[0].url",
     "unknown function"),
    ([dict(INVENTORY, url="https://x/{{ sku ")], "dataSources[0].url", "line 1, column"),
    ([dict(INVENTORY, url="https://x/" + "a" * 1995)], "dataSources[0].url", "2000"),
    ([dict(INVENTORY, url="https://")], "dataSources[0].url", "host"),
    ([dict(INVENTORY, url="https://exa mple.com/")], "dataSources[0].url", "not a host name"),
    ([dict(INVENTORY, url="https://x\n.test/{{ a }}")], "dataSources[0].url",
     "control characters"),
    ([dict(INVENTORY, url="https://x.test:99999/")], "dataSources[0].url", "not a valid URL"),
    ([dict(INVENTORY, method="PUT")], "dataSources[0].method", "GET or POST"),
    ([dict(INVENTORY, method="get")], "dataSources[0].method", "GET or POST"),
    ([dict(INVENTORY, headers=["Accept"])], "dataSources[0].headers", "object"),
    ([dict(INVENTORY, headers={"Authorization": "Bearer x"})],
     "dataSources[0].headers.Authorization", "credentials"),
    ([dict(INVENTORY, headers={"X-N": 5})], "dataSources[0].headers.X-N", "text"),
    ([dict(INVENTORY, headers={"X-Bad": "a\r\nb"})], "dataSources[0].headers.X-Bad",
     "CR, LF"),
    ([dict(INVENTORY, headers={"Bad Name": "x"})], "dataSources[0].headers.Bad Name",
     "token"),
    ([dict(INVENTORY, headers={"X-Sku": "{{ sku + }}"})], "dataSources[0].headers.X-Sku",
     "line 1, column"),
    ([dict(INVENTORY, headers={f"X-{i}": "v" for i in range(21)})],
     "dataSources[0].headers", "at most 20"),
    ([dict(INVENTORY, body="{}")], "dataSources[0].body", "POST"),
    ([dict(INVENTORY, method="POST", body=5)], "dataSources[0].body", "text"),
    ([dict(INVENTORY, method="POST", body="x" * (64 * 1024 + 1))], "dataSources[0].body",
     "65536"),
    ([dict(INVENTORY, method="POST", body='{"sku": "{{ sku + }}"}')], "dataSources[0].body",
     "line 1, column"),
    ([dict(INVENTORY, ttlSeconds=-1)], "dataSources[0].ttlSeconds", "0 to 86400"),
    ([dict(INVENTORY, ttlSeconds=86_401)], "dataSources[0].ttlSeconds", "0 to 86400"),
    ([dict(INVENTORY, ttlSeconds="60")], "dataSources[0].ttlSeconds", "whole number"),
    ([dict(INVENTORY, ttlSeconds=True)], "dataSources[0].ttlSeconds", "whole number"),
    ([dict(INVENTORY, ttlSeconds=1.5)], "dataSources[0].ttlSeconds", "whole number"),
    ([dict(INVENTORY, cache=True)], "dataSources[0].cache", "unknown property"),
    ([INVENTORY, dict(INVENTORY, url="https://other.example/")], "dataSources[1].name",
     "twice"),
])
async def test_a_bad_declaration_is_refused_naming_its_field(
    templates: Templates, sources: Any, field: str, says: str,
) -> None:
    errors = await refused(templates, sources)
    assert field in errors, errors
    assert says in errors[field]


async def test_every_problem_is_reported_at_once_and_nothing_is_stored(
    templates: Templates, repo: TemplateRepository,
) -> None:
    errors = await refused(templates, [
        {"name": "1", "url": "ftp://x", "method": "PATCH", "ttlSeconds": -5},
        dict(INVENTORY, headers={"Cookie": "a=b"}, extra=1),
    ], variable_definitions=[{"name": "x", "type": "nope"}])
    assert set(errors) >= {"dataSources[0].name", "dataSources[0].url",
                           "dataSources[0].method", "dataSources[0].ttlSeconds",
                           "dataSources[1].headers.Cookie", "dataSources[1].extra",
                           "variables[0].type"}
    page, _ = await repo.list("t1", page_size=10, page_token="")
    assert page == []


async def test_the_limit_on_sources_is_a_setting(repo: TemplateRepository) -> None:
    assert TemplateSettings().template_max_data_sources == 5
    two = _service(repo, max_sources=2)
    sources = [dict(INVENTORY, name=f"s{i}") for i in range(3)]
    errors = await refused(two, sources)
    assert "at most 2 data sources (LITHO_TEMPLATE_MAX_DATA_SOURCES)" in errors["dataSources"]
    await create(two, sources[:2])


async def test_declarations_are_normalised_and_stored_with_each_version(
    templates: Templates,
) -> None:
    template_id = await create(templates, [
        INVENTORY,
        {"name": "prices", "url": "HTTPS://api.example.com/prices", "method": "POST",
         "headers": {"Accept": "application/json", "X-Sku": "{{ sku }}"},
         "body": '{"sku": "{{ sku }}"}', "ttlSeconds": 0},
    ])
    stored = await templates.get("t1", template_id)
    assert stored.data_sources == [
        {"name": "inventory", "url": INVENTORY["url"], "method": "GET", "headers": {},
         "ttlSeconds": 60},
        {"name": "prices", "url": "HTTPS://api.example.com/prices", "method": "POST",
         "headers": {"Accept": "application/json", "X-Sku": "{{ sku }}"},
         "body": '{"sku": "{{ sku }}"}', "ttlSeconds": 0},
    ]
    # An update that leaves dataSources out keeps them; [] removes them.
    kept = await templates.update("t1", template_id, Spec(html=HTML + "!"))
    assert kept.data_sources == stored.data_sources
    removed = await templates.update("t1", template_id, Spec(data_sources=[]))
    assert removed.data_sources == [] and removed.version == 3
    versions, _ = await templates.versions("t1", template_id, 10, "")
    assert [len(v.data_sources) for v in versions] == [0, 2, 2]
    # Each version expands with its own declarations.
    first = await templates.expand("t1", template_id, 1, '{"sku": "a1"}')
    assert [p.name for p in first.pending] == ["inventory", "prices"]
    latest = await templates.expand("t1", template_id, 0, '{"sku": "a1"}')
    assert latest.pending == () and latest.html == "<p> a1</p>!"


async def test_the_wire_shape_of_data_sources(templates: Templates) -> None:
    plain = await templates.get("t1", await create(templates, None, html="<p>{{ data }}</p>"))
    message = template_to_proto(plain)
    assert message.data_sources_json == "[]"
    # Without data sources, "data" is an ordinary variable.
    assert list(message.discovered_variables) == ["data"]
    with_sources = await templates.get("t1", await create(
        templates, [INVENTORY], html="{{ data.inventory.price }} {{ sku }}"))
    message = template_to_proto(with_sources)
    assert json.loads(message.data_sources_json) == with_sources.data_sources
    # With them, "data" is the sources': not a variable the caller gives.
    assert list(message.discovered_variables) == ["sku"]

    spec = spec_from_proto(pb.TemplateSpec(data_sources_json=json.dumps([INVENTORY])),
                           max_variables_bytes=MAX_VARIABLES)
    assert spec.data_sources == [INVENTORY]
    assert spec_from_proto(pb.TemplateSpec(), max_variables_bytes=1).data_sources is None
    with pytest.raises(InvalidArgument) as info:
        spec_from_proto(pb.TemplateSpec(data_sources_json="{nope"), max_variables_bytes=1)
    assert info.value.errors[0].field == "dataSources"
    with pytest.raises(InvalidArgument) as info:
        spec_from_proto(pb.TemplateSpec(data_sources_json=json.dumps("x" * 200_000)),
                        max_variables_bytes=1, max_data_sources=1)
    assert "LITHO_TEMPLATE_MAX_DATA_SOURCES" in info.value.errors[0].message


async def test_data_is_reserved_when_a_template_declares_sources(
    templates: Templates,
) -> None:
    data_definition = [{"name": "data", "type": "object"}]
    errors = await refused(templates, [INVENTORY], variable_definitions=data_definition)
    assert "reserved" in errors["variables[0].name"]
    # Fine without sources; then adding sources to it is refused.
    template_id = await create(templates, None, variable_definitions=data_definition)
    with pytest.raises(InvalidArgument) as info:
        await templates.update("t1", template_id, Spec(data_sources=[INVENTORY]))
    assert info.value.errors[0].field == "variables[0].name"
    assert (await templates.get("t1", template_id)).version == 1


# ------------------------------------------------------------------- expansion

async def test_the_first_expansion_answers_the_sources_to_fetch(
    templates: Templates,
) -> None:
    template_id = await create(templates, [
        dict(INVENTORY, url="https://api.example.com/items/{{ sku }}?q={{ q }}&n={{ n }}",
             headers={"X-Sku": "{{ sku | uppercase }}", "Accept": "application/json"},
             ttlSeconds=30),
        {"name": "prices", "url": "https://prices.example.com/", "method": "POST",
         "body": '{"sku": "{{ sku }}", "tags": {{ raw json(tags) }}}'},
    ])
    variables = {"sku": "a1", "q": "<b c>", "n": 3, "tags": ["x", "y"]}
    expansion = await templates.expand("t1", template_id, 0, json.dumps(variables))
    assert expansion.html == "" and expansion.template.version == 1
    inventory, prices = expansion.pending
    # No HTML escaping in a URL, header or body; in the URL each value is
    # percent-encoded as a URI component.
    assert inventory.url == "https://api.example.com/items/a1?q=%3Cb%20c%3E&n=3"
    assert inventory.method == "GET" and inventory.ttl_seconds == 30
    assert inventory.headers == {"X-Sku": "A1", "Accept": "application/json"}
    assert inventory.body == ""
    assert prices.method == "POST" and prices.ttl_seconds == 60
    assert json.loads(prices.body) == {"sku": "a1", "tags": ["x", "y"]}


async def test_a_value_is_encoded_as_a_uri_component(templates: Templates) -> None:
    template_id = await create(templates, [dict(INVENTORY, url="https://x.test/{{ p }}")])
    expansion = await templates.expand(
        "t1", template_id, 0, json.dumps({"p": "a/b?c=1&d=%2F#f é\n+@:~._-"}))
    # Only A-Z a-z 0-9 - . _ ~ are kept; a value's "/" or "?" is no path or query.
    assert (expansion.pending[0].url
            == "https://x.test/a%2Fb%3Fc%3D1%26d%3D%252F%23f%20%C3%A9%0A%2B%40%3A~._-")


async def test_raw_writes_a_value_with_its_url_syntax(templates: Templates) -> None:
    template_id = await create(templates, [dict(
        INVENTORY, url="https://x.test/{{ raw p }}?q={{ q | raw }}&r={{ q }}")])
    expansion = await templates.expand(
        "t1", template_id, 0, json.dumps({"p": "a/b", "q": "c=1&d=%2F é"}))
    # As the template's own text: reserved characters and escapes kept, what
    # a URL cannot hold percent-encoded as a browser does.
    assert (expansion.pending[0].url
            == "https://x.test/a/b?q=c=1&d=%2F%20%C3%A9&r=c%3D1%26d%3D%252F%20%C3%A9")


async def test_the_template_s_own_text_keeps_its_meaning(templates: Templates) -> None:
    template_id = await create(templates, [dict(
        INVENTORY, url="https://x.test/a b/é?k=v&w=%2F#top{{ if on }}/on{{ end }}")])
    expansion = await templates.expand("t1", template_id, 0, '{"on": true}')
    assert expansion.pending[0].url == "https://x.test/a%20b/%C3%A9?k=v&w=%2F#top/on"


@pytest.mark.parametrize(("url", "value", "expected"), [
    ("https://api.example.com/items/{{ sku }}?key=1", "../../admin",
     "https://api.example.com/items/..%2F..%2Fadmin?key=1"),
    ("https://api.example.com/items/{{ sku }}?key=1", "1?admin=true#",
     "https://api.example.com/items/1%3Fadmin%3Dtrue%23?key=1"),
    ("https://api.example.com/items/{{ sku }}?key=1", "%2e%2e",
     "https://api.example.com/items/%252e%252e?key=1"),
    ("https://api.example.com/items/{{ sku }}?key=1", "a b",
     "https://api.example.com/items/a%20b?key=1"),
    ("https://api.example.com/items/{{ sku }}?key=1", "bücher/☃",
     "https://api.example.com/items/b%C3%BCcher%2F%E2%98%83?key=1"),
    ("https://api.example.com/items?q={{ sku }}&key=1", "x&key=2#",
     "https://api.example.com/items?q=x%26key%3D2%23&key=1"),
    ("https://api.example.com/items#{{ sku }}", "a/b?c",
     "https://api.example.com/items#a%2Fb%3Fc"),
])
async def test_a_value_stays_inside_its_component(
    templates: Templates, url: str, value: str, expected: str,
) -> None:
    template_id = await create(templates, [dict(INVENTORY, url=url)])
    expansion = await templates.expand("t1", template_id, 0, json.dumps({"sku": value}))
    [pending] = expansion.pending
    assert pending.url == expected
    parts = urlsplit(pending.url)
    assert parts.hostname == "api.example.com"
    assert parts.query in ("", "key=1") or parts.query.endswith("&key=1")


@pytest.mark.parametrize("value", ["evil.com/?", "evil.com#", "u:p@evil.com/", "a b"])
async def test_a_value_cannot_move_the_host(templates: Templates, value: str) -> None:
    template_id = await create(templates, [dict(
        INVENTORY, url="https://{{ sub }}.api.example.com/x")])
    with pytest.raises(InvalidArgument) as info:
        await templates.expand("t1", template_id, 0, json.dumps({"sku": 1, "sub": value}))
    [error] = info.value.errors
    assert error.field == "dataSources.inventory.url"
    assert "not a host name" in error.message
    # A value that is a host label stays one.
    ok = await templates.expand("t1", template_id, 0, '{"sub": "eu-1"}')
    assert urlsplit(ok.pending[0].url).hostname == "eu-1.api.example.com"


@pytest.mark.parametrize("value", ["..", ".", "%2e%2E", ".%2e"])
async def test_a_dot_segment_is_refused(templates: Templates, value: str) -> None:
    # ".." is all unreserved characters: encoded or not, a client resolves
    # it, so an expanded URL with a dot segment is refused (a raw one too).
    template_id = await create(templates, [dict(
        INVENTORY, url="https://x.test/items/{{ raw sku }}/price")])
    with pytest.raises(InvalidArgument) as info:
        await templates.expand("t1", template_id, 0, json.dumps({"sku": value}))
    [error] = info.value.errors
    assert error.field == "dataSources.inventory.url"
    assert "'..' path segment" in error.message


async def test_an_unencoded_dot_segment_value_is_refused(templates: Templates) -> None:
    template_id = await create(templates, [INVENTORY])
    with pytest.raises(InvalidArgument) as info:
        await templates.expand("t1", template_id, 0, '{"sku": ".."}')
    assert "path segment" in info.value.errors[0].message


@pytest.mark.parametrize("url", [
    "https://user:pass@api.example.com/x",
    "https://key@api.example.com/{{ sku }}",
    "https://{{ creds }}@api.example.com/x",
    "https://{{ raw creds }}@{{ host }}/x",
    "https://api.example.com@{{ host }}/x",
])
async def test_userinfo_is_refused_on_save(templates: Templates, url: str) -> None:
    errors = await refused(templates, [dict(INVENTORY, url=url)])
    assert "user name or password" in errors["dataSources[0].url"]
    assert "header" in errors["dataSources[0].url"]


async def test_userinfo_from_a_raw_value_is_refused_without_echoing_it(
    templates: Templates,
) -> None:
    template_id = await create(templates, [dict(INVENTORY, url="https://{{ raw host }}/x")])
    with pytest.raises(InvalidArgument) as info:
        await templates.expand("t1", template_id, 0,
                               '{"host": "user:s3cret@api.example.com"}')
    [error] = info.value.errors
    assert error.field == "dataSources.inventory.url"
    assert "user name or password" in error.message
    assert "s3cret" not in error.message and "s3cret" not in info.value.message
    # Encoded, the same value is no userinfo: it is refused as a host.
    template_id = await create(templates, [dict(INVENTORY, url="https://{{ host }}/x")])
    with pytest.raises(InvalidArgument) as info:
        await templates.expand("t1", template_id, 0,
                               '{"host": "user:s3cret@api.example.com"}')
    assert "not a host name" in info.value.errors[0].message


@pytest.mark.parametrize("url", [
    "https://a.test/{{ x }}\r\nHost: b",
    "https://a.test/{{ x }}/\x00",
    "https://a.test/{{ x }}\t",
    "https://a.test/{{ if x }}\n{{ end }}",
])
async def test_control_characters_outside_tags_are_refused_on_save(
    templates: Templates, url: str,
) -> None:
    errors = await refused(templates, [dict(INVENTORY, url=url)])
    assert "control characters" in errors["dataSources[0].url"]


async def test_a_control_character_in_a_tag_s_string_is_not_outside_it(
    templates: Templates,
) -> None:
    # "}}" in a string does not end the tag; "\n" there is written as %0A.
    template_id = await create(templates, [dict(
        INVENTORY, url="https://a.test/{{ '}}\n' + sku }}")])
    expansion = await templates.expand("t1", template_id, 0, '{"sku": "a"}')
    assert expansion.pending[0].url == "https://a.test/%7D%7D%0Aa"


async def test_then_it_expands_with_the_data(templates: Templates) -> None:
    template_id = await create(templates, [INVENTORY])
    expansion = await templates.expand(
        "t1", template_id, 0, '{"sku": "a1"}', data_json='{"inventory": {"price": 9.5}}')
    assert expansion.pending == ()
    assert expansion.html == "<p>9.5 a1</p>"


async def test_only_the_sources_not_given_are_pending(templates: Templates) -> None:
    template_id = await create(templates, [
        INVENTORY, {"name": "rates", "url": "https://rates.example.com/"},
        {"name": "news", "url": "https://news.example.com/"},
    ], html="{{ data.inventory.price }}/{{ data.rates.eur }}/{{ data.news }}")
    variables = {"data": {"inventory": {"price": 1}}, "sku": "s"}
    expansion = await templates.expand("t1", template_id, 0, json.dumps(variables),
                                       data_json='{"rates": {"eur": 2}}')
    assert [p.name for p in expansion.pending] == ["news"]
    # A null value counts as given: the name is there.
    done = await templates.expand("t1", template_id, 0, json.dumps(variables),
                                  data_json='{"rates": {"eur": 2}, "news": null}')
    assert done.html == "1/2/"


async def test_the_render_s_explicit_variables_win_per_source(templates: Templates) -> None:
    template_id = await create(templates, [INVENTORY, {"name": "rates",
                                                       "url": "https://rates.example.com/"}],
                               html="{{ data.inventory.price }}/{{ data.rates.eur }}")
    expansion = await templates.expand(
        "t1", template_id, 0, json.dumps({"data": {"inventory": {"price": "mine"}}}),
        data_json=json.dumps({"inventory": {"price": "fetched"}, "rates": {"eur": 2}}))
    assert expansion.html == "mine/2"
    # Given entirely by the variables: nothing to fetch.
    given = await templates.expand(
        "t1", template_id, 0,
        json.dumps({"data": {"inventory": {"price": 1}, "rates": {"eur": 3}}}))
    assert given.pending == () and given.html == "1/3"


async def test_a_data_variable_that_is_not_an_object_gives_no_source(
    templates: Templates,
) -> None:
    template_id = await create(templates, [INVENTORY])
    expansion = await templates.expand("t1", template_id, 0, '{"data": "inventory"}')
    assert [p.name for p in expansion.pending] == ["inventory"]
    done = await templates.expand("t1", template_id, 0, '{"data": "inventory", "sku": 1}',
                                  data_json='{"inventory": {"price": 4}}')
    assert done.html == "<p>4 1</p>"


@pytest.mark.parametrize(("source", "variables", "field", "says"), [
    (dict(INVENTORY, url="https://{{ host }}/x"), {"host": ""}, "dataSources.inventory.url",
     "host"),
    (dict(INVENTORY, url="https://{{ host }}/x"), {"host": "a b"},
     "dataSources.inventory.url", "'a b', which is not a host name"),
    (dict(INVENTORY, url="https://{{ host }}/x"), {"host": "bücher.example"},
     "dataSources.inventory.url", "xn--"),
    (dict(INVENTORY, url="https://{{ host }}/x"), {"host": "x:99999"},
     "dataSources.inventory.url", "'x:99999', which is not a host name"),
    (dict(INVENTORY, url="https://{{ raw host }}/x"), {"host": "x:99999"},
     "dataSources.inventory.url", "not a valid URL"),
    (dict(INVENTORY, url="https://x/{{ items * 2 }}"), {"items": [1]},
     "dataSources.inventory.url", "line 1, column 20: cannot apply"),
    (dict(INVENTORY, url="https://x/{{ p }}"), {"p": "y" * 8000},
     "dataSources.inventory.url", "8000"),
    (dict(INVENTORY, headers={"X-V": "{{ v }}"}), {"v": "a\r\nEvil: 1"},
     "dataSources.inventory.headers.X-V", "CR, LF"),
    (dict(INVENTORY, headers={"X-V": "{{ v }}"}), {"v": "x\u2028y\u0085z"},
     "dataSources.inventory.headers.X-V", "U+2028"),
    (dict(INVENTORY, headers={"X-V": "{{ v }}"}), {"v": "a" * 1001},
     "dataSources.inventory.headers.X-V", "1000"),
    (dict(INVENTORY, method="POST", body="{{ for i in xs }}{{ b }}{{ end }}"),
     {"b": "z" * 700, "xs": list(range(100))},
     "dataSources.inventory.body", "65536"),
])
async def test_a_source_that_expands_badly_is_refused_naming_it(
    templates: Templates, source: dict[str, Any], variables: dict[str, Any], field: str,
    says: str,
) -> None:
    template_id = await create(templates, [source])
    with pytest.raises(InvalidArgument) as info:
        await templates.expand("t1", template_id, 0, json.dumps(variables))
    errors = {e.field: e.message for e in info.value.errors}
    assert field in errors, errors
    assert says in errors[field]


async def test_expanding_a_source_is_under_the_render_limits(
    repo: TemplateRepository,
) -> None:
    templates = _service(repo, lang=LangLimits(max_loop_iterations=10))
    template_id = await create(templates, [dict(
        INVENTORY, url="https://x/{{ for i in xs }}{{ i }},{{ end }}")])
    ok = await templates.expand("t1", template_id, 0, json.dumps({"xs": list(range(10))}))
    assert ok.pending[0].url == "https://x/0,1,2,3,4,5,6,7,8,9,"
    with pytest.raises(InvalidArgument) as info:
        await templates.expand("t1", template_id, 0, json.dumps({"xs": list(range(11))}))
    [error] = info.value.errors
    assert error.field == "dataSources.inventory.url"
    assert "LITHO_TEMPLATE_MAX_LOOP_ITERATIONS" in error.message


@pytest.mark.parametrize(("data_json", "says"), [
    ('["inventory"]', "object"),
    ("{nope", "JSON"),
    (json.dumps({"inventory": "x" * MAX_DATA}), "LITHO_TEMPLATE_MAX_DATA_BYTES"),
])
async def test_data_is_bounded_by_its_setting(
    templates: Templates, data_json: str, says: str,
) -> None:
    template_id = await create(templates, [INVENTORY])
    with pytest.raises(InvalidArgument) as info:
        await templates.expand("t1", template_id, 0, "{}", data_json=data_json)
    [error] = info.value.errors
    assert error.field == "data" and says in (error.message + info.value.message)


async def test_a_template_without_sources_expands_as_before(templates: Templates) -> None:
    template_id = await create(templates, None, html="<p>{{ data.x }}</p>")
    # data_json is not read at all: not even a broken one.
    expansion = await templates.expand("t1", template_id, 0, '{"data": {"x": "<&>"}}',
                                       data_json="{nope")
    assert expansion.pending == () and expansion.html == "<p>&lt;&amp;&gt;</p>"


async def test_a_one_shot_render_cannot_declare_sources(templates: Templates) -> None:
    with pytest.raises(InvalidArgument) as info:
        await templates.expand_inline("t1", Spec(html="<p/>", width=10, height=10,
                                                 data_sources=[INVENTORY]), "{}")
    assert [e.field for e in info.value.errors] == ["dataSources"]
    plain = await templates.expand_inline("t1", Spec(html="<p/>", width=10, height=10,
                                                     data_sources=[]), "{}")
    assert plain.html == "<p/>"


async def test_expand_template_answers_pending_data_sources_on_the_wire(
    templates: Templates,
) -> None:
    template_id = await create(templates, [dict(
        INVENTORY, method="POST", body="{{ sku }}", headers={"X-Sku": "{{ sku }}"},
        ttlSeconds=5)])
    servicer = TemplateServicer(templates, max_variables_bytes=MAX_VARIABLES)
    context: Any = None
    first = await servicer.ExpandTemplate(pb.ExpandTemplateRequest(
        tenant_id="t1", template_id=template_id, variables_json='{"sku": "k9"}'), context)
    assert first.html == "" and first.version == 1
    [pending] = first.pending_data_sources
    assert (pending.name, pending.url, pending.method, dict(pending.headers), pending.body,
            pending.ttl_seconds) == ("inventory", "https://api.example.com/items/k9", "POST",
                                     {"X-Sku": "k9"}, "k9", 5)
    second = await servicer.ExpandTemplate(pb.ExpandTemplateRequest(
        tenant_id="t1", template_id=template_id, version=first.version,
        variables_json='{"sku": "k9"}', data_json='{"inventory": {"price": 3}}'), context)
    assert not second.pending_data_sources and second.html == "<p>3 k9</p>"


async def test_known_data_for_the_same_requests_expands_in_one_answer(
    templates: Templates,
) -> None:
    """The renderer offers fresh data it holds for the requests this template
    made before: taken only for exactly the request each source expands to,
    and only when every missing source is given so."""
    template_id = await create(templates, [
        INVENTORY, {"name": "rates", "url": "https://rates.example.com/", "ttlSeconds": 30}],
        html="{{ data.inventory.price }}/{{ data.rates.eur }}")
    first = await templates.expand("t1", template_id, 0, '{"sku": "a1"}')
    keys = {p.name: source_key(p.url, p.method, p.headers.items(), p.body, p.ttl_seconds)
            for p in first.pending}
    known = {"inventory": (keys["inventory"], '{"price": 9}'),
             "rates": (keys["rates"], '{"eur": 2}')}
    done = await templates.expand("t1", template_id, 0, '{"sku": "a1"}', known=known)
    assert done.pending == () and done.html == "9/2"
    assert sorted(done.known_used) == ["inventory", "rates"]
    # Another SKU is another request: both sources pending, nothing used.
    moved = await templates.expand("t1", template_id, 0, '{"sku": "b2"}', known=known)
    assert [p.name for p in moved.pending] == ["inventory", "rates"] and not moved.known_used
    # One source unknown: all pending (the caller fetches and expands again).
    partial = await templates.expand("t1", template_id, 0, '{"sku": "a1"}',
                                     known={"rates": known["rates"]})
    assert len(partial.pending) == 2
    # The variables' own data still wins; a source they give is not needed.
    mine = await templates.expand(
        "t1", template_id, 0, json.dumps({"sku": "a1", "data": {"rates": {"eur": 7}}}),
        known=known)
    assert mine.html == "9/7" and mine.known_used == ("inventory",)
    # Known data is bounded as data_json is.
    with pytest.raises(InvalidArgument) as info:
        await templates.expand("t1", template_id, 0, '{"sku": "a1"}', known={
            "inventory": (keys["inventory"], json.dumps("x" * MAX_DATA)),
            "rates": known["rates"]})
    assert "LITHO_TEMPLATE_MAX_DATA_BYTES" in str(info.value.errors) + info.value.message
    # Each source's data is one JSON value: nothing spliced in beside it.
    with pytest.raises(InvalidArgument):
        await templates.expand("t1", template_id, 0, '{"sku": "a1"}', known={
            "inventory": (keys["inventory"], '{"price": 9}, "x": "injected"'),
            "rates": known["rates"]})


async def test_known_data_travels_on_the_wire(templates: Templates) -> None:
    template_id = await create(templates, [INVENTORY])
    servicer = TemplateServicer(templates, max_variables_bytes=MAX_VARIABLES)
    context: Any = None
    first = await servicer.ExpandTemplate(pb.ExpandTemplateRequest(
        tenant_id="t1", template_id=template_id, variables_json='{"sku": "k9"}'), context)
    [p] = first.pending_data_sources
    key = source_key(p.url, p.method, p.headers.items(), p.body, p.ttl_seconds)
    answer = await servicer.ExpandTemplate(pb.ExpandTemplateRequest(
        tenant_id="t1", template_id=template_id, variables_json='{"sku": "k9"}',
        known_data_sources=[pb.KnownDataSource(name="inventory", key=key,
                                               data_json='{"price": 4}')]), context)
    assert answer.html == "<p>4 k9</p>" and list(answer.known_data_sources_used) == ["inventory"]
    wrong = await servicer.ExpandTemplate(pb.ExpandTemplateRequest(
        tenant_id="t1", template_id=template_id, variables_json='{"sku": "k9"}',
        known_data_sources=[pb.KnownDataSource(name="inventory", key="0" * 64,
                                               data_json='{"price": 4}')]), context)
    assert wrong.html == "" and len(wrong.pending_data_sources) == 1


# ------------------------------------------------- URL encoding and save rules

async def test_headers_and_body_are_not_url_encoded(templates: Templates) -> None:
    template_id = await create(templates, [dict(
        INVENTORY, url="https://x.test/{{ sku }}", method="POST",
        headers={"X-Sku": "{{ sku }}"}, body='{"sku": "{{ sku }}"}')])
    expansion = await templates.expand("t1", template_id, 0, '{"sku": "a/b?c=1 é"}')
    [pending] = expansion.pending
    assert pending.url == "https://x.test/a%2Fb%3Fc%3D1%20%C3%A9"
    assert pending.headers == {"X-Sku": "a/b?c=1 é"}
    assert pending.body == '{"sku": "a/b?c=1 é"}'


def test_the_url_mode_encodes_every_output_but_raw_ones() -> None:
    engine = Engine()
    source = ("{{ a }}|{{ raw a }}|{{ a | raw }}|{{ if t }}{{ a }}{{ else }}-{{ end }}|"
              "{{ for x in xs }}{{ x }},{{ end }}|{{ n }}")
    variables = {"a": "<&/ ?>", "t": True, "xs": ["a b", "c/d"], "n": 1.5}
    out = engine.compile(source, url=True).render(variables, max_output=10_000)
    assert out == ("%3C%26%2F%20%3F%3E|<&/ ?>|<&/ ?>|%3C%26%2F%20%3F%3E|"
                   "a%20b,c%2Fd,|1.5")
    plain = engine.compile(source, escape=False).render(variables, max_output=10_000)
    assert plain == "<&/ ?>|<&/ ?>|<&/ ?>|<&/ ?>|a b,c/d,|1.5"
    html = engine.compile(source).render(variables, max_output=10_000)
    assert html.startswith("&lt;&amp;/ ?&gt;|<&/ ?>|<&/ ?>|&lt;&amp;/ ?&gt;|")


def test_a_url_template_is_compiled_and_cached_apart() -> None:
    expander = LangExpander(Engine())
    variables = {"a": "x/y"}
    assert expander.expand("{{ a }}", variables, max_output=100, escape=False) == "x/y"
    assert expander.expand("{{ a }}", variables, max_output=100, escape=False,
                           url=True) == "x%2Fy"
    assert expander.expand("{{ a }}", variables, max_output=100, url=True) == "x%2Fy"
    assert expander.expand("{{ a }}", variables, max_output=100) == "x/y"
    assert expander.cached() == 3


def test_no_source_text_shares_a_cache_key_with_another_mode() -> None:
    # An HTML source that ends like a mode marker must not fill the slot of
    # the URL compile of its prefix (which would then expand unencoded).
    expander = LangExpander(Engine())
    variables = {"a": "x?admin=1#"}
    for suffix in ("\x00url", "\x00plain", "u", "h", "p"):
        expander.expand("https://h/{{ a }}" + suffix, variables, max_output=200)
        expander.expand(suffix + "https://h/{{ a }}", variables, max_output=200)
    assert expander.expand("https://h/{{ a }}", variables, max_output=200,
                           url=True) == "https://h/x%3Fadmin%3D1%23"


@pytest.mark.parametrize(("source", "placeholder", "expected"), [
    ("https://a/{{ x }}/b", "", "https://a//b"),
    ("{{ '}}' }}t{{ \"{{\" }}", "_", "_t_"),
    ("a{{ if x }}b{{ else }}c{{ end }}d", "", "abcd"),
    ("a{{ x", "_", "a_"),
    ("a{{ ( }}b", "", "ab"),
    ("a{{{ x }}}b", "", "ab"),
])
def test_outside_tags(source: str, placeholder: str, expected: str) -> None:
    assert outside_tags(source, placeholder) == expected


def _parse(url: str, allow: AllowList | None) -> list[dict[str, Any]]:
    return parse_data_sources([{"name": "s", "url": url}], LangExpander(Engine()).check,
                              max_sources=5, allow=allow)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/",
    "http://169.254.169.254/latest/meta-data/{{ path }}",
    "http://[::1]:8080/x?{{ q }}",
    "http://10.0.0.1#{{ f }}",
    "https://localhost/{{ x }}",
    "http://2130706433/",
])
def test_a_literal_private_host_is_refused_on_save(url: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        _parse(url, AllowList())
    [error] = info.value.errors
    assert error.field == "dataSources[0].url"
    assert "LITHO_OUTBOUND_ALLOW" in error.message


@pytest.mark.parametrize("url", [
    "https://api.example.com/{{ x }}",
    "https://{{ host }}/x",
    "https://{{ sub }}.internal/x",
    "http://127.0.0.1{{ x }}/",  # a tag writes part of the host or port: checked at fetch
    "http://127.0.0.1:{{ port }}/",
])
def test_a_public_or_tagged_host_passes_on_save(url: str) -> None:
    assert _parse(url, AllowList())[0]["url"] == url


def test_the_allow_list_admits_a_private_host_on_save() -> None:
    url = "http://127.0.0.1:8081/items/{{ sku }}"
    with pytest.raises(InvalidArgument):
        _parse(url, AllowList())
    assert _parse(url, AllowList.parse("127.0.0.1:8081"))[0]["url"] == url
    # Without an allow-list (the service gave none) the guard decides at fetch.
    assert _parse(url, None)[0]["url"] == url
