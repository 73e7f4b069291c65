"""Fit-to-box text end to end, read from the pixels: red text in a blue box on
a white page, with ``overflow: visible``, so any text that does not fit shows
as red ink on white."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from tests.e2e.conftest import Live
from tests.e2e.test_render_path import create, render

BOX = (100, 80, 600, 150)  # left, top, width, height
TEMPLATE = """<!doctype html><html><head><style>
  html, body { margin: 0; background: #ffffff; }
  #box { position: absolute; left: %dpx; top: %dpx; width: %dpx; height: %dpx;
         background: #0000ff; color: #ff0000; font: bold 120px sans-serif;
         line-height: 1.4; overflow: visible; }
</style></head><body data-note="{{ note }}"><div id="box" data-fit {{ attrs }}>{{ title }}</div>
</body></html>"""

SHORT = "Forty characters make this a short title"
LONG = ("Two hundred characters make a long title, the kind that clipped before: "
        "nothing shrank text to fit its box, so the end of the sentence fell off the card "
        "and out of sight unless one guessed a fontsize.")


def html(width: int = BOX[2], height: int = BOX[3], attrs: str = "") -> str:
    return (TEMPLATE % (BOX[0], BOX[1], width, height)).replace("{{ attrs }}", attrs)


async def png(live: Live, template_id: str, variables: dict[str, Any],
              **options: Any) -> Image.Image:
    result = await render(live, template_id, {"variables": variables, **options})
    async with live.http.get(result["url"]) as r:
        assert r.status == 200
        return Image.open(io.BytesIO(await r.read())).convert("RGB")


def red(pixel: tuple[int, int, int]) -> bool:
    r, g, _ = pixel
    return r > 128 and g < 100


def ink_rows(image: Image.Image) -> list[int]:
    width, height = image.size
    px = image.load()
    assert px is not None
    return [y for y in range(height) if any(red(px[x, y]) for x in range(width))]  # type: ignore[arg-type]


def bands(rows: list[int]) -> list[int]:
    """Heights of runs of rows with ink: the lines of text (line-height 1.4 leaves gaps)."""
    runs: list[int] = []
    for i, y in enumerate(rows):
        if i and y == rows[i - 1] + 1:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


def outside_the_box(image: Image.Image, box: tuple[int, int, int, int] = BOX) -> int:
    """Pixels outside the box that are not the page's white: ink that overflowed."""
    left, top, width, height = box
    px = image.load()
    assert px is not None
    return sum(1 for y in range(image.height) for x in range(image.width)
               if not (left <= x < left + width and top <= y < top + height)
               and px[x, y] != (255, 255, 255))


async def test_a_short_and_a_long_title_both_fit_their_box(live: Live) -> None:
    assert (len(SHORT), len(LONG)) == (40, 200)
    template = await create(live, html=html(), width=800, height=320)
    short = await png(live, template["id"], {"title": SHORT})
    long = await png(live, template["id"], {"title": LONG})
    for image in (short, long):
        assert outside_the_box(image) == 0
        assert ink_rows(image)  # the text is there, in the box
    # The short title got the bigger font: taller lines of ink, and fewer of them.
    short_lines, long_lines = bands(ink_rows(short)), bands(ink_rows(long))
    assert len(short_lines) < len(long_lines)
    assert max(short_lines) > 1.5 * max(long_lines)
    # Without data-fit the long title overflows the same box: the check can fail.
    unfitted = await create(live, html=html().replace(" data-fit ", " "), width=800, height=320)
    assert outside_the_box(await png(live, unfitted["id"], {"title": LONG})) > 1000


async def test_data_fit_lines_caps_the_number_of_lines(live: Live) -> None:
    tall = (BOX[0], BOX[1], BOX[2], 220)
    text = "A headline that would take three lines at its own size"
    sizes = {}
    for lines in (1, 2):
        template = await create(live, html=html(height=tall[3], attrs=f'data-fit-lines="{lines}"'),
                                width=800, height=320)
        image = await png(live, template["id"], {"title": text})
        assert outside_the_box(image, tall) == 0
        found = bands(ink_rows(image))
        assert len(found) == lines, found
        sizes[lines] = max(found)
    # Two lines leave room for a larger font than one.
    assert sizes[2] > sizes[1]


async def test_the_same_document_renders_to_the_same_bytes(live: Live) -> None:
    template = await create(live, html=html(), width=800, height=320)
    # A note outside the box makes a new document (no cache hit) with the same layout.
    first = await render(live, template["id"], {"variables": {"title": LONG}})
    second = await render(live, template["id"], {"variables": {"title": LONG,
                                                               "note": "again"}})
    assert first["id"] != second["id"] and not second["cached"]
    data = []
    for result in (first, second):
        async with live.http.get(result["url"]) as r:
            data.append(await r.read())
    assert data[0] == data[1]


async def test_a_selector_crop_sees_the_fitted_text(live: Live) -> None:
    template = await create(live, html=html(), width=800, height=320)
    whole = await png(live, template["id"], {"title": SHORT})
    crop = await png(live, template["id"], {"title": SHORT}, selector="#box")
    assert crop.size == BOX[2:]
    assert bands(ink_rows(crop)) == bands(ink_rows(whole))


def stored(live: Live) -> set[Path]:
    return {p for p in (live.stack.data_dir / "blobs").rglob("*") if p.is_file()}


async def test_min_larger_than_max_is_a_422_on_every_path(live: Live) -> None:
    template = await create(live, html=html(attrs='data-fit-min="{{ min }}" data-fit-max="40"'),
                            width=800, height=320)
    tid = template["id"]
    before = stored(live)
    calls: list[tuple[str, dict[str, Any]]] = [
        (f"/v1/templates/{tid}/render", {"variables": {"title": "x", "min": 60}}),
        (f"/v1/templates/{tid}/render", {"format": "gif", "variables": {"min": 60}}),
        (f"/v1/templates/{tid}/render", {"selector": "#box", "variables": {"min": 60}}),
        # The second page is the bad one: every document of a PDF is fitted.
        (f"/v1/templates/{tid}/pdf", {"variableSets": [{"min": 10}, {"min": 60}]}),
    ]
    for path, body in calls:
        async with live.http.post(live.url + path, json=body, headers=live.auth()) as r:
            problem = json.loads(await r.text())
            assert r.status == 422, (path, body, problem)
        assert 'data-fit-min="60"' in problem["detail"], problem
        assert "at most data-fit-max" in problem["detail"], problem
        assert [e["field"] for e in problem["errors"]] == ["html"], problem
    for attrs, needle in (('data-fit-max="huge"', "LITHO_RENDERER_FIT_MAX_FONT_SIZE"),
                          ('data-fit-min="-4"', "from 1 to 1000"),
                          ('data-fit-max="5000"', "from 1 to 1000")):
        bad = await create(live, html=html(attrs=attrs), width=800, height=320)
        async with live.http.post(f"{live.url}/v1/templates/{bad['id']}/render", json={},
                                  headers=live.auth()) as r:
            problem = json.loads(await r.text())
            assert r.status == 422 and needle in problem["detail"], problem
    # Only the templates were stored, no output.
    assert not {p for p in stored(live) - before if "outputs" in p.parts}
