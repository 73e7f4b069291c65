"""Fit-to-box text (``_fit.py``) on real Chromium with JavaScript disabled, as
pages are in production; end to end, with pixels, in tests/e2e/test_fit.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from litho.errors import InvalidArgument
from services.renderer import _fit
from services.renderer._fit import FitLimits, fit_text

LIMITS = FitLimits()

#: Whether each data-fit element fits at its size, and overflows (or takes
#: more lines than allowed) half a pixel larger: the size is the largest.
_CHECK = """() => Array.from(document.querySelectorAll('[data-fit]')).map((el) => {
  // A pixel of slack: scroll sizes round up, client sizes to the nearest.
  const over = () => el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1;
  const lines = () => {
    const r = document.createRange(); r.selectNodeContents(el);
    return new Set(Array.from(r.getClientRects()).filter((x) => x.width > 0)
                   .map((x) => Math.round(x.bottom))).size;
  };
  const want = Number(el.getAttribute('data-fit-lines') || Infinity);
  const size = parseFloat(getComputedStyle(el).fontSize);
  const fits = !over() && lines() <= want;
  el.style.setProperty('font-size', `${size + 0.5}px`, 'important');
  const larger = !over() && lines() <= want;
  el.style.setProperty('font-size', `${size}px`, 'important');
  return {size, fits, larger};
})"""


def card(*boxes: str, style: str = "") -> str:
    return ("<!doctype html><html><head><style>body { margin: 0 } "
            ".box { width: 300px; height: 60px; font: 40px sans-serif; line-height: 1.2 } "
            f"{style}</style></head><body>{''.join(boxes)}</body></html>")


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(java_script_enabled=False,
                                        viewport={"width": 800, "height": 600})
    made = await context.new_page()
    yield made
    await context.close()


async def test_text_gets_the_largest_size_that_fits(page: Page) -> None:
    short, long = "A short title", "A much longer title that cannot fit at forty pixels " * 2
    await page.set_content(card(f'<div class="box" data-fit>{short}</div>',
                                f'<div class="box" data-fit>{long}</div>'))
    result = await fit_text(page, LIMITS)
    checks = await page.evaluate(_CHECK)
    assert [c["size"] for c in checks] == list(result.sizes)
    # The short title keeps its CSS size (the maximum); the long one shrinks.
    assert checks[0]["size"] == 40 and checks[0]["fits"]
    assert checks[1]["fits"] and not checks[1]["larger"]
    assert 8 < checks[1]["size"] < 40
    assert all(size is not None and size * 2 == int(size * 2) for size in result.sizes)
    assert 0 < result.layouts <= 2 * LIMITS.steps_per_element


async def test_text_grows_up_to_data_fit_max_only(page: Page) -> None:
    await page.set_content(card('<div class="box" data-fit data-fit-max="200">Hi</div>',
                                '<div class="box" data-fit data-fit-max="30">Hi</div>'))
    result = await fit_text(page, LIMITS)
    checks = await page.evaluate(_CHECK)
    assert checks[0]["fits"] and not checks[0]["larger"] and checks[0]["size"] > 40
    assert result.sizes[1] == 30  # fits larger, but 30 is its maximum


async def test_data_fit_lines_bounds_the_lines(page: Page) -> None:
    text = "Fit this headline into two lines of a wide and tall box please"
    await page.set_content(card(
        f'<div class="box tall" data-fit data-fit-lines="2" data-fit-max="100">{text}</div>',
        f'<div class="box tall" data-fit data-fit-max="100">{text}</div>',
        style=".tall { height: 400px }"))
    result = await fit_text(page, LIMITS)
    checks = await page.evaluate(_CHECK)
    assert checks[0]["fits"] and not checks[0]["larger"]
    assert result.sizes[0] is not None and result.sizes[1] is not None
    assert result.sizes[0] < result.sizes[1]  # the box alone would allow more lines


async def test_a_box_of_auto_height_is_bounded_by_width_and_lines_only(page: Page) -> None:
    # A fractional line height (1.3 × 35.5 px) must not read as overflow.
    await page.set_content(card(
        '<p class="auto" data-fit data-fit-lines="2" data-fit-max="56">A subtitle</p>',
        f'<p class="auto" data-fit data-fit-lines="2" data-fit-max="56">{"many words " * 12}</p>',
        style=".auto { width: 600px; font-size: 40px; line-height: 1.3; margin: 0 }"))
    result = await fit_text(page, LIMITS)
    checks = await page.evaluate(_CHECK)
    assert result.sizes[0] == 56
    assert checks[1]["fits"] and not checks[1]["larger"], checks
    assert 8 < checks[1]["size"] < 56


async def test_text_too_long_for_the_minimum_keeps_the_minimum(page: Page) -> None:
    await page.set_content(card(f'<div class="box" data-fit data-fit-min="20">{"word " * 200}'
                                "</div>"))
    result = await fit_text(page, LIMITS)
    assert result.sizes == (20,)


async def test_the_same_document_gets_the_same_sizes(page: Page) -> None:
    html = card(*(f'<div class="box" data-fit>{"title " * n}</div>' for n in (3, 9, 27)))
    sizes = []
    for _ in range(2):
        await page.set_content(html)
        sizes.append((await fit_text(page, LIMITS)).sizes)
    assert sizes[0] == sizes[1] and len(set(sizes[0])) == 3


async def test_template_scripts_stay_off_and_hidden_elements_are_skipped(page: Page) -> None:
    await page.set_content(card('<div class="box" data-fit style="display:none">x</div>',
                                '<div class="box" data-fit>y</div>'
                                "<script>document.title = 'ran'</script>"))
    result = await fit_text(page, LIMITS)
    assert result.sizes == (None, 40)
    assert await page.title() == ""


async def test_documents_without_data_fit_cost_no_evaluate() -> None:
    assert not _fit.wanted(card('<div class="box">x</div>'))
    assert _fit.wanted(card('<div class="box" data-fit>x</div>'))


@pytest.mark.parametrize(("attributes", "named", "allowed"), [
    ('data-fit-min="40" data-fit-max="20"', 'data-fit-min="40"', "at most data-fit-max"),
    ('data-fit-min="big"', 'data-fit-min="big"', "from 1 to 1000"),
    ('data-fit-max="-3"', 'data-fit-max="-3"', "LITHO_RENDERER_FIT_MAX_FONT_SIZE"),
    ('data-fit-max="2000"', 'data-fit-max="2000"', "from 1 to 1000"),
    ('data-fit-lines="0"', 'data-fit-lines="0"', "1 or more"),
    ('data-fit-lines="two"', 'data-fit-lines="two"', "whole number"),
])
async def test_bad_attributes_are_refused_naming_them(
        page: Page, attributes: str, named: str, allowed: str) -> None:
    await page.set_content(card(f'<div class="box" id="title" data-fit {attributes}>x</div>'))
    with pytest.raises(InvalidArgument) as raised:
        await fit_text(page, LIMITS)
    assert named in str(raised.value) and '<div id="title">' in str(raised.value)
    assert allowed in str(raised.value)
    assert [e.field for e in raised.value.errors] == ["html"]
    assert named in raised.value.errors[0].message
    # Nothing was fitted: the page shows the author's own size.
    assert await page.evaluate("document.getElementById('title').style.fontSize") == ""


async def test_an_inline_element_has_no_box_to_fit(page: Page) -> None:
    await page.set_content(card('<p>a <span data-fit class="x">b</span></p>'))
    with pytest.raises(InvalidArgument, match='<span class="x">: the element needs a box'):
        await fit_text(page, LIMITS)


async def test_too_many_elements_name_the_setting(page: Page) -> None:
    await page.set_content(card(*['<div class="box" data-fit>x</div>'] * 4))
    with pytest.raises(InvalidArgument, match=r"4 data-fit elements; at most 3 .*"
                                              r"\(LITHO_RENDERER_FIT_MAX_ELEMENTS\)"):
        await fit_text(page, FitLimits(max_elements=3))
    assert (await fit_text(page, FitLimits(max_elements=4))).sizes == (40,) * 4


async def test_many_problems_are_summed_up() -> None:
    problems = [{"kind": "lines", "attribute": "data-fit-lines", "value": str(-i),
                 "element": "<div>"} for i in range(8)]
    refusal = _fit.refusal(problems, count=8, limits=LIMITS)
    assert "(and 7 more)" in str(refusal)
    assert len(refusal.errors) == 6 and "3 more" in refusal.errors[-1].message


def test_the_search_is_bounded_by_the_largest_size() -> None:
    assert FitLimits(max_font_px=1000).steps_per_element == 13  # 2 + log2(2000)
    assert FitLimits(max_font_px=8).steps_per_element == 6


@pytest.mark.parametrize("clobber", [
    '<img name="querySelectorAll">', '<img name="createTreeWalker">', '<img name="fonts">',
    '<img name="createRange">', '<img name="documentElement">',
])
async def test_markup_that_shadows_dom_methods_does_not_break_fitting(
        page: Page, clobber: str) -> None:
    """Named elements shadow document properties; the fit goes through the
    DOM's prototypes, so it still fits (it used to throw: a 503)."""
    long = "A much longer title that cannot fit at forty pixels " * 2
    await page.set_content(card(clobber, f'<div class="box" data-fit data-fit-lines="2">{long}'
                                         "</div>"))
    result = await fit_text(page, LIMITS)
    assert result.sizes[0] is not None and 8 <= result.sizes[0] < 40


async def test_a_form_is_never_a_fitted_box(page: Page) -> None:
    await page.set_content(card('<form class="box" data-fit><input name="style">'
                                '<input name="getAttribute">x</form>'))
    with pytest.raises(InvalidArgument, match="<form class=\"box\">: a form cannot be fitted"):
        await fit_text(page, LIMITS)
