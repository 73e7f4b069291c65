"""Folder names for templates: slugs, clashes, the folder tag, stability."""

from __future__ import annotations

from typing import Any

import pytest

from litho.cli._folders import (
    DIR_TAG_PREFIX,
    MAX_FOLDER_CHARS,
    assign,
    dir_tag,
    folder_of,
    slug,
    user_tags,
    valid_folder,
)


def tpl(name: str, *tags: str, id_: str = "") -> dict[str, Any]:
    return {"id": id_ or f"tpl_{name}", "name": name, "tags": list(tags)}


@pytest.mark.parametrize(("name", "expected"), [
    ("OG card", "og-card"),
    ("Blog post: Ünïcode!", "blog-post-unicode"),
    ("  --Hello__World--  ", "hello-world"),
    ("../../etc/passwd", "etc-passwd"),
    ("日本語", "template"),
    ("", "template"),
    ("CON", "con-template"),
    ("x" * 300, "x" * MAX_FOLDER_CHARS),
])
def test_slugs_are_safe_folder_names(name: str, expected: str) -> None:
    assert slug(name) == expected
    assert valid_folder(slug(name))


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "a\\b", "a..b", "", "x" * 41,
                                  "nul.txt", "é", "a b"])
def test_unsafe_folder_names_are_refused(name: str) -> None:
    assert not valid_folder(name)


def test_untagged_templates_get_unique_slugs_in_order() -> None:
    tagged, named = assign([tpl("Card", id_="tpl_1"), tpl("card!", id_="tpl_2"),
                            tpl("CARD", id_="tpl_3"), tpl("Story", id_="tpl_4")])
    assert tagged == {}
    assert {f: t["id"] for f, t in named.items()} == {
        "card": "tpl_1", "card-2": "tpl_2", "card-3": "tpl_3", "story": "tpl_4"}


def test_a_long_name_keeps_its_suffix_within_the_tag_limit() -> None:
    _, named = assign([tpl("y" * 100), tpl("y" * 100, id_="tpl_b")])
    assert set(named) == {"y" * 40, "y" * 38 + "-2"}
    assert all(len(dir_tag(f)) <= 50 for f in named)


def test_the_folder_tag_wins_and_is_never_taken_by_a_slug() -> None:
    # "card" is pinned by a tag on a newer template: the older untagged
    # "Card" must not take it, whatever the order.
    tagged, named = assign([tpl("Card", id_="tpl_1"),
                            tpl("Renamed", dir_tag("card"), "og", id_="tpl_2")])
    assert tagged["card"]["id"] == "tpl_2"
    assert named["card-2"]["id"] == "tpl_1"


def test_folders_are_stable_when_templates_are_added() -> None:
    before = assign([tpl("Card", id_="tpl_1"), tpl("Card", id_="tpl_2")])[1]
    after = assign([tpl("Card", id_="tpl_1"), tpl("Card", id_="tpl_2"),
                    tpl("Card", id_="tpl_3")])[1]
    assert {f: t["id"] for f, t in before.items()}.items() <= {
        f: t["id"] for f, t in after.items()}.items()


def test_clashes_ignore_case_for_case_insensitive_file_systems() -> None:
    tagged, named = assign([tpl("x", dir_tag("Card"), id_="tpl_1"), tpl("card", id_="tpl_2")])
    assert list(tagged) == ["Card"]
    assert list(named) == ["card-2"]


def test_two_templates_claiming_one_folder_the_oldest_wins() -> None:
    tagged, named = assign([tpl("A", dir_tag("card"), id_="tpl_1"),
                            tpl("B", dir_tag("card"), id_="tpl_2")])
    assert tagged["card"]["id"] == "tpl_1"
    assert named["b"]["id"] == "tpl_2"


def test_a_hostile_folder_tag_is_ignored() -> None:
    for bad in ("../../outside", ".git", "a/b", "", "x" * 41):
        tags = [DIR_TAG_PREFIX + bad, "og"]
        assert folder_of(tags) is None
        tagged, named = assign([tpl("Safe", *tags)])
        assert tagged == {} and list(named) == ["safe"]


def test_user_tags_leave_out_the_folder_tag() -> None:
    assert user_tags(["og", dir_tag("card"), "blue", 7]) == ["og", "blue"]
