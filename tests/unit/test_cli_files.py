"""Template folders on disk: what push reads and refuses, what pull writes,
and the comparison that decides whether a push makes a new version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from litho.cli._folders import dir_tag
from litho.cli._local import read_all, write
from litho.cli._model import Template, changes, from_server, meta_bytes, meta_text

MAX = 1024 * 1024


def server_copy(template: Template, **over: Any) -> dict[str, Any]:
    """What the API answers for ``template`` after a push (data source
    defaults filled in, the folder tag last)."""
    sources = [{"method": "GET", "headers": {}, "ttlSeconds": 60, **s}
               for s in template.meta.get("dataSources", [])]
    return {"id": "tpl_1", "version": 1, "html": template.html, **template.meta,
            "dataSources": sources, "discoveredVariables": [],
            "tags": [*template.meta.get("tags", []), dir_tag(template.folder)], **over}


CARD = Template("og-card", "<h1>{{ title }}</h1>\r\n<p>é</p>", {
    "name": "OG card", "width": 1200, "height": 630,
    "variables": [{"name": "title", "type": "text", "validation": {"maxLength": 80}}],
    "sampleVariables": {"title": "Hi", "n": 1, "nested": {"b": 1, "a": [1, 2]}},
    "tags": ["og"], "dataSources": [{"name": "stock", "url": "https://example.com/s"}]})


def test_an_unchanged_template_needs_no_update() -> None:
    assert changes(CARD, server_copy(CARD)) == {}


def test_only_the_fields_that_differ_are_sent() -> None:
    server = server_copy(CARD, html="<h1>old</h1>", width=600)
    assert changes(CARD, server) == {"html": CARD.html, "width": 1200}


def test_json_types_are_compared_as_json_not_python() -> None:
    # True == 1 in Python; a template tells them apart.
    server = server_copy(CARD, sampleVariables={**CARD.meta["sampleVariables"], "n": True})
    assert list(changes(CARD, server)) == ["sampleVariables"]


def test_object_key_order_is_no_change() -> None:
    server = server_copy(CARD, sampleVariables={"nested": {"a": [1, 2], "b": 1}, "n": 1,
                                                "title": "Hi"})
    assert changes(CARD, server) == {}


def test_a_missing_or_moved_folder_tag_is_a_tags_change() -> None:
    assert changes(CARD, server_copy(CARD, tags=["og"])) == {
        "tags": ["og", dir_tag("og-card")]}
    assert list(changes(CARD, server_copy(CARD, tags=["og", "extra", dir_tag("og-card")]))
                ) == ["tags"]


def test_pulled_metadata_is_stable_sorted_and_ends_with_a_newline() -> None:
    pulled = from_server("og-card", server_copy(CARD))
    text = meta_text(pulled.meta)
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert list(json.loads(text)) == ["name", "width", "height", "variables",
                                      "sampleVariables", "tags", "dataSources"]
    assert '"nested": {\n      "a"' in text  # nested keys sorted
    # The same template in another key order writes the same bytes.
    shuffled = dict(reversed(list(server_copy(CARD).items())))
    assert meta_text(from_server("og-card", shuffled).meta) == text
    assert pulled.meta["tags"] == ["og"]


def test_a_lone_surrogate_is_written_escaped(tmp_path: Path) -> None:
    meta = {**CARD.meta, "name": "bad \udc80"}
    data = meta_bytes(meta)
    assert json.loads(data)["name"] == "bad \udc80"


def test_a_pulled_folder_reads_back_as_the_same_template(tmp_path: Path) -> None:
    pulled = from_server("og-card", server_copy(CARD))
    assert write(tmp_path, pulled) is True
    assert write(tmp_path, pulled) is False  # nothing rewritten: a clean git status
    checked = read_all(tmp_path, MAX)
    assert checked.errors == []
    assert checked.templates == [pulled]
    assert (tmp_path / "og-card" / "template.html").read_bytes() == CARD.html.encode()
    assert changes(checked.templates[0], server_copy(CARD)) == {}


def folder(root: Path, name: str, html: bytes | None, meta: str | None) -> Path:
    path = root / name
    path.mkdir()
    if html is not None:
        (path / "template.html").write_bytes(html)
    if meta is not None:
        (path / "template.json").write_text(meta)
    return path


def test_every_problem_of_every_folder_is_reported(tmp_path: Path) -> None:
    good = '{"name": "ok", "width": 10, "height": 10}'
    folder(tmp_path, "bad-json", b"<p>x</p>", '{"name": "x",\n  "width": }')
    folder(tmp_path, "bad-shape", b"<p>x</p>",
           '{"name": "", "width": 0, "height": 10, "colour": 1, "tags": ["litho.dir:x"]}')
    folder(tmp_path, "not-utf8", b"<p>\nab\xff</p>", good)
    folder(tmp_path, "no-html", None, good)
    folder(tmp_path, "empty", b"", good)
    folder(tmp_path, "Bad Name", b"<p>x</p>", good)
    folder(tmp_path, "ok", b"<p>x</p>", good)
    (tmp_path / "assets").mkdir()  # no template files: not a template
    (tmp_path / ".git").mkdir()
    checked = read_all(tmp_path, MAX)
    assert [t.folder for t in checked.templates] == ["ok"]
    text = "\n".join(checked.errors)
    assert f"{tmp_path}/bad-json/template.json:2:12: Expecting value" in text
    assert f"{tmp_path}/bad-shape/template.json: name: " in text
    assert f"{tmp_path}/bad-shape/template.json: width: 0 is less than the minimum" in text
    assert "unknown field(s) ('colour' was unexpected)" in text
    assert "tags[0]: the litho.dir: prefix is kept for the folder tag" in text
    assert f"{tmp_path}/not-utf8/template.html:2:3: not UTF-8 (byte 0xff)" in text
    assert f"{tmp_path}/no-html/template.html: missing" in text
    assert f"{tmp_path}/empty/template.html: empty" in text
    assert f"{tmp_path}/Bad Name: a template folder's name is" in text
    # Every readable HTML is still sent to the validator, whatever its JSON says.
    assert set(checked.sources) == {"bad-json", "bad-shape", "Bad Name", "ok"}


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    folder(tmp_path, "big", b"x" * 5000, '{"name": "ok", "width": 10, "height": 10}')
    assert read_all(tmp_path, 4096).errors == [
        f"{tmp_path}/big/template.html: over 4096 bytes (LITHO_CLI_MAX_FILE_BYTES)"]


def test_too_many_folders_are_refused(tmp_path: Path) -> None:
    for i in range(3):
        folder(tmp_path, f"t{i}", b"<p>x</p>", '{"name": "ok", "width": 10, "height": 10}')
    assert read_all(tmp_path, MAX, max_templates=2).errors == [
        f"{tmp_path}: more than 2 template folders (LITHO_CLI_MAX_TEMPLATES)"]
    assert len(read_all(tmp_path, MAX, max_templates=3).templates) == 3


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    assert read_all(tmp_path / "nope", MAX).errors == [f"{tmp_path / 'nope'}: not a directory"]
