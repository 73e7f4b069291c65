"""How the renderer declares a tenant's uploaded fonts in a document."""

from __future__ import annotations

from services.renderer._fonts import declare, font_faces_css, url_of
from services.renderer._pipeline import FontFace

BRAND = FontFace(family="Brand Sans", weight=700, style="normal", id="fnt_" + "a" * 24,
                 format="woff2", sha256="0" * 64, blob_key="fonts/x/fnt_a.woff2")


def test_rules_name_the_family_weight_style_and_a_url_that_never_resolves() -> None:
    css = font_faces_css((BRAND,))
    assert css == ('@font-face{font-family:"Brand Sans";src:url("http://fonts.litho.invalid/'
                   f'{BRAND.id}.woff2") format("woff2");font-weight:700;font-style:normal;'
                   'font-display:block}')
    assert url_of(BRAND).startswith("http://fonts.litho.invalid/")


def test_rules_go_after_the_doctype_so_the_page_stays_in_standards_mode() -> None:
    html = "  <!DOCTYPE html>\n<html><body>x</body></html>"
    declared = declare(html, (BRAND,))
    assert declared.startswith("  <!DOCTYPE html><style>@font-face")
    assert declared.endswith("\n<html><body>x</body></html>")
    assert declare("<p>x</p>", (BRAND,)).startswith("<style>@font-face")
    assert declare("<p>x</p>", ()) == "<p>x</p>"


def test_a_family_that_could_break_out_of_css_is_never_written() -> None:
    for family in ('x";}</style><script>', "a{b}", "x\ny", "a'b", ""):
        hostile = FontFace(family=family, weight=400, style="normal", id=BRAND.id,
                           format="ttf", sha256="0" * 64, blob_key="k")
        assert font_faces_css((hostile,)) == ""
    odd_format = FontFace(family="Ok", weight=400, style="normal", id=BRAND.id,
                          format="svg", sha256="0" * 64, blob_key="k")
    assert font_faces_css((odd_format,)) == ""


def _face(family: str, size: int, n: int = 0) -> FontFace:
    return FontFace(family=family, weight=400, style="normal", id=f"fnt_{n:024x}",
                    format="ttf", sha256="0" * 64, blob_key=f"k{n}", size=size)


def test_a_render_declares_only_what_its_font_budget_holds() -> None:
    from services.renderer._fonts import left_out, within_budget

    faces = tuple(_face(f"F{n}", 6 * 1024 * 1024, n) for n in range(5))
    kept, dropped = within_budget(faces, max_count=20, max_bytes=16 * 1024 * 1024)
    assert [f.family for f in kept] == ["F0", "F1"] and len(dropped) == 3
    kept, dropped = within_budget(faces, max_count=1, max_bytes=1 << 40)
    assert len(kept) == 1 and len(dropped) == 4
    warning = left_out(dropped[0], max_count=1, max_bytes=1 << 40)
    assert warning.outcome.value == "too_large"
    assert "LITHO_RENDERER_MAX_FONTS_PER_RENDER" in warning.hint


def test_family_names_with_combining_marks_are_declared() -> None:
    """Hindi and Tamil names need their marks (the template service allows them)."""
    for family in ("Cafe\u0301 Box", "हिन्दी", "தமிழ்"):
        assert font_faces_css((_face(family, 10),)) != ""


class _Route:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def abort(self, error_code: str | None = None) -> None:
        self.bodies.append(b"")

    async def fulfill(self, *, status: int | None = None,
                      headers: dict[str, str] | None = None,
                      body: bytes | str | None = None) -> None:
        assert isinstance(body, bytes)
        self.bodies.append(body)


async def test_the_font_cache_is_bounded_in_bytes_and_kept_per_tenant() -> None:
    from services.renderer._fonts import FontServer
    from tests.unit.test_pipeline import MemoryBlobs

    blobs = MemoryBlobs()
    reads: list[str] = []
    get = blobs.get

    async def counting_get(key: str):  # type: ignore[no-untyped-def]
        reads.append(key)
        return await get(key)

    blobs.get = counting_get  # type: ignore[method-assign]
    faces = [FontFace(family=f"F{n}", weight=400, style="normal", id=f"fnt_{n:024x}",
                      format="ttf", sha256="0" * 64, blob_key=f"fonts/x/{n}.ttf", size=size)
             for n, size in enumerate((100, 100, 300))]
    for face in faces:
        await blobs.put(face.blob_key, b"f" * face.size, "font/ttf")
    server = FontServer(blobs, max_cached_bytes=400)  # entries of at most 100 bytes
    route = _Route()
    for face in (faces[0], faces[0], faces[1], faces[2], faces[2]):
        asset = await server.serve(route, face, "t1")
        assert asset.outcome.value == "loaded" and asset.size == face.size
    # The first two are read once each; the 300-byte one, over a quarter of
    # the budget, is read every time.
    assert reads == ["fonts/x/0.ttf", "fonts/x/1.ttf", "fonts/x/2.ttf", "fonts/x/2.ttf"]
    # Another tenant never shares an entry (timing would tell what is cached).
    await server.serve(route, faces[0], "t2")
    assert reads[-1] == "fonts/x/0.ttf"
    # A font gone from the store is a failed asset, not an error.
    await blobs.delete(faces[1].blob_key)
    gone = FontFace(**{**faces[1].__dict__, "blob_key": "fonts/x/none.ttf"})
    assert (await server.serve(route, gone, "t1")).outcome.value == "failed"
