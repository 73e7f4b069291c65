"""Fit-to-box text: ``data-fit`` elements get the largest font size that fits.

An element marked ``data-fit`` gets the largest font size, in steps of
0.5 CSS px between its minimum and maximum, at which its content does not
overflow its own box (``scrollWidth``/``scrollHeight`` within
``clientWidth``/``clientHeight``: the width and height its CSS gives it)
and, with ``data-fit-lines="N"``, takes at most N lines. The maximum is
``data-fit-max`` or else the element's own CSS font size (text shrinks to fit,
as in Bannerbear and Placid; it grows only up to an explicit
``data-fit-max``); the minimum is ``data-fit-min`` or else
``DEFAULT_MIN_PX`` (or the maximum, if that is smaller). Text that does not
fit even at the minimum keeps the minimum and overflows (or is clipped by
the author's ``overflow: hidden``). The size is set inline with
``!important``, so descendants sized in ``em`` or ``%`` follow it.

Template scripts never run (pages have JavaScript disabled), yet the
DevTools protocol still evaluates our own function in the page: one
``page.evaluate`` per document fits every element, waiting for web fonts
first, so what is measured is what is drawn. Elements are fitted in
document order, each by a binary search that is a pure function of the
layout: the same document gives the same sizes every time.

Bounds: at most ``FitLimits.max_elements`` fitted elements per document
(``LITHO_RENDERER_FIT_MAX_ELEMENTS``) and sizes of at most
``FitLimits.max_font_px`` (``LITHO_RENDERER_FIT_MAX_FONT_SIZE``), which
bounds the search of one element to ``steps_per_element`` layouts (13 at
the default). Bad attributes are a 422 naming the attribute, the element
and what is allowed; nothing is fitted then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from litho.errors import FieldError, InvalidArgument

_tracer = trace.get_tracer("litho.renderer.fit")

#: Smallest size a fitted element shrinks to without ``data-fit-min``.
DEFAULT_MIN_PX = 8.0
#: The search's step: sizes are whole or half CSS pixels.
STEP_PX = 0.5
#: Problems named in one refusal; a document with more has the same cause.
_MAX_PROBLEMS = 5

_FIT = """async ({maxElements, maxFont, minDefault}) => {
  // The document's markup can shadow DOM methods by name (<img name=fonts>
  // on document, <input name=getAttribute> in a <form>): every call goes
  // through the prototypes, never through the objects the document controls.
  const call = (proto, name, self, ...args) => proto[name].call(self, ...args);
  const get = (proto, name, self) =>
    Object.getOwnPropertyDescriptor(proto, name).get.call(self);
  const D = Document.prototype, E = Element.prototype, H = HTMLElement.prototype;
  const attr = (el, name) => call(E, 'getAttribute', el, name);
  const setSize = (el, value) => call(CSSStyleDeclaration.prototype, 'setProperty',
                                      get(H, 'style', el), 'font-size', value, 'important');
  const out = {problems: [], sizes: [], layouts: 0, count: 0};
  const elements = call(D, 'querySelectorAll', document, '[data-fit]');
  out.count = elements.length;
  if (elements.length === 0) return out;
  if (elements.length > maxElements) {
    out.problems.push({kind: 'too_many'});
    return out;
  }
  const describe = (el) => {
    const id = attr(el, 'id'), cls = attr(el, 'class');
    const shown = id ? ` id="${id.slice(0, 40)}"` : cls ? ` class="${cls.slice(0, 40)}"` : '';
    return `<${get(E, 'localName', el).slice(0, 20)}${shown}>`;
  };
  const SIZE = /^\\s*([0-9]{1,7}(\\.[0-9]{1,3})?)\\s*(px)?\\s*$/i;
  const LINES = /^\\s*([0-9]{1,7})\\s*$/;
  const plans = [];
  for (const el of elements) {
    const plan = {el, min: null, max: null, lines: null};
    const problem = (kind, attribute) => out.problems.push({
      kind, attribute, element: describe(el),
      value: (attr(el, attribute) || '').slice(0, 40)});
    for (const name of ['min', 'max']) {
      const attribute = `data-fit-${name}`;
      const raw = attr(el, attribute);
      if (raw === null) continue;
      const m = SIZE.exec(raw);
      const value = m ? Number(m[1]) : NaN;
      if (value >= 1 && value <= maxFont) plan[name] = value;
      else problem('size', attribute);
    }
    const lines = attr(el, 'data-fit-lines');
    if (lines !== null) {
      const m = LINES.exec(lines);
      if (m && Number(m[1]) >= 1) plan.lines = Number(m[1]);
      else problem('lines', 'data-fit-lines');
    }
    if (plan.min !== null && plan.max !== null && plan.min > plan.max) {
      out.problems.push({kind: 'order', element: describe(el), attribute: 'data-fit-min',
                         value: String(plan.min), other: String(plan.max)});
    }
    // A form's named controls shadow its properties: never a fitted box.
    if (el instanceof HTMLFormElement) problem('form', 'data-fit');
    else if (!(el instanceof HTMLElement)) problem('box', 'data-fit');
    else if (getComputedStyle(el).display === 'inline') problem('box', 'data-fit');
    plans.push(plan);
  }
  if (out.problems.length) return out;
  // Lay out once so that every web font the page uses has started to load.
  void get(H, 'offsetWidth', get(D, 'documentElement', document));
  await get(FontFaceSet.prototype, 'ready', get(D, 'fonts', document));
  const countLines = (el) => {
    const rects = [];
    const walker = call(D, 'createTreeWalker', document, el, NodeFilter.SHOW_TEXT);
    const range = call(D, 'createRange', document);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      range.selectNodeContents(node);
      for (const r of range.getClientRects()) if (r.width > 0 && r.height > 0) rects.push(r);
    }
    rects.sort((a, b) => a.top - b.top || a.left - b.left);
    let lines = 0, bottom = -Infinity;
    for (const r of rects) {
      // Runs of one line overlap vertically even when their fonts differ.
      if ((r.top + r.bottom) / 2 > bottom) { lines += 1; bottom = r.bottom; }
    }
    return lines;
  };
  for (const plan of plans) {
    const el = plan.el;
    if (call(E, 'getClientRects', el).length === 0) { out.sizes.push(null); continue; }
    const own = parseFloat(getComputedStyle(el).fontSize) || 16;
    let max = plan.max !== null ? plan.max : Math.min(Math.max(own, 1), maxFont);
    let min = plan.min !== null ? plan.min : Math.min(minDefault, max);
    // In half pixels: every size tried is a multiple of 0.5 px.
    let lo = Math.ceil(min * 2), hi = Math.max(lo, Math.floor(max * 2));
    const fits = (halves) => {
      setSize(el, `${halves / 2}px`);
      out.layouts += 1;
      // Scroll sizes round up and client sizes to the nearest pixel: a
      // difference of one pixel is rounding (0.15 px of a fractional line
      // height), not text that shows outside the box.
      if (get(E, 'scrollWidth', el) > get(E, 'clientWidth', el) + 1
          || get(E, 'scrollHeight', el) > get(E, 'clientHeight', el) + 1) {
        return false;
      }
      return plan.lines === null || countLines(el) <= plan.lines;
    };
    let best;
    if (fits(hi)) best = hi;
    else if (!fits(lo)) best = lo;  // too long even at the minimum: it overflows
    else {
      // fits(lo) and not fits(hi): narrow the gap to one step.
      while (hi - lo > 1) {
        const mid = Math.floor((lo + hi) / 2);
        if (fits(mid)) lo = mid; else hi = mid;
      }
      best = lo;
    }
    setSize(el, `${best / 2}px`);
    out.sizes.push(best / 2);
  }
  return out;
}"""


@dataclass(frozen=True)
class FitLimits:
    #: Most ``data-fit`` elements in one document (LITHO_RENDERER_FIT_MAX_ELEMENTS).
    max_elements: int = 100
    #: Largest ``data-fit-min``/``data-fit-max``, in CSS px
    #: (LITHO_RENDERER_FIT_MAX_FONT_SIZE); also caps a CSS size used as the maximum.
    max_font_px: float = 1000.0

    @property
    def steps_per_element(self) -> int:
        """Most layouts the search of one element takes: both ends, then halving."""
        return 2 + math.ceil(math.log2(max(2.0, self.max_font_px / STEP_PX)))


@dataclass(frozen=True)
class FitResult:
    #: The size given to each ``data-fit`` element, in document order
    #: (None: the element is not rendered, e.g. ``display: none``).
    sizes: tuple[float | None, ...]
    #: Layouts the searches took.
    layouts: int


def wanted(html: str) -> bool:
    """Whether a document may have ``data-fit`` elements: a substring check,
    so documents without them cost no evaluate."""
    return "data-fit" in html


async def fit_text(page: Page, limits: FitLimits) -> FitResult:
    """Fit every ``data-fit`` element of the loaded document (module docs)."""
    with _tracer.start_as_current_span("fit text") as span:
        try:
            reply: dict[str, Any] = await page.evaluate(_FIT, {
                "maxElements": limits.max_elements, "maxFont": limits.max_font_px,
                "minDefault": DEFAULT_MIN_PX})
        except PlaywrightError as exc:
            # The script reaches the DOM only through its prototypes; an error
            # it still meets comes from the document (a 422), unless the page
            # or browser is gone (the pool's to handle).
            if page.is_closed() or any(m in str(exc) for m in ("closed", "crashed")):
                raise
            raise InvalidArgument(
                "fit-to-box text could not measure this document: "
                f"{str(exc).splitlines()[0][:200]}",
                errors=[FieldError("html", "data-fit: the document's markup broke "
                                           "the measurement")]) from exc
        span.set_attribute("litho.fit.elements", int(reply["count"]))
        span.set_attribute("litho.fit.layouts", int(reply["layouts"]))
    if reply["problems"]:
        raise refusal(reply["problems"], count=int(reply["count"]), limits=limits)
    return FitResult(sizes=tuple(reply["sizes"]), layouts=int(reply["layouts"]))


def refusal(problems: Sequence[Mapping[str, str]], *, count: int,
            limits: FitLimits) -> InvalidArgument:
    """The 422 for what the page found wrong with a document's ``data-fit`` attributes."""
    messages = [describe(p, count=count, limits=limits) for p in problems[:_MAX_PROBLEMS]]
    more = len(problems) - len(messages)
    summary = messages[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    errors = [FieldError("html", m) for m in messages]
    if more:
        errors.append(FieldError("html", f"{more} more data-fit problems like these"))
    return InvalidArgument(f"fit-to-box text: {summary}", errors=errors)


def describe(problem: Mapping[str, str], *, count: int, limits: FitLimits) -> str:
    kind = problem["kind"]
    if kind == "too_many":
        return (f"the document has {count} data-fit elements; at most {limits.max_elements} "
                f"are allowed (LITHO_RENDERER_FIT_MAX_ELEMENTS)")
    where = f'{problem["attribute"]}="{problem["value"]}" on {problem["element"]}'
    if kind == "size":
        return (f"{where}: must be a number of CSS px from 1 to {limits.max_font_px:g} "
                f"(LITHO_RENDERER_FIT_MAX_FONT_SIZE), such as 12 or 12.5px")
    if kind == "lines":
        return f"{where}: must be a whole number of lines, 1 or more"
    if kind == "order":
        return (f'{where} is larger than data-fit-max="{problem["other"]}": '
                f"data-fit-min must be at most data-fit-max")
    if kind == "box":
        return (f"data-fit on {problem['element']}: the element needs a box of its own to "
                f"fit into (an HTML element with display block, inline-block or flex, and a "
                f"width, plus a height or data-fit-lines)")
    if kind == "form":
        return (f"data-fit on {problem['element']}: a form cannot be fitted (its named "
                f"controls shadow its properties); put data-fit on an element inside it")
    raise ValueError(f"unknown data-fit problem {kind!r}")
