"""Renames made for buf's STANDARD lint kept the bytes on the wire."""

from __future__ import annotations

from google.protobuf.message import Message

from litho.renderer.v1 import renderer_pb2 as pb


def test_render_pdf_response_reads_what_render_pdf_answered_before_it_had_its_own_type() -> None:
    # RenderPdf answered RenderTemplateResponse until buf's RPC_RESPONSE_STANDARD_NAME
    # gave it RenderPdfResponse: same names, numbers and types, so old and new
    # peers still read each other.
    def fields(message: type[Message]) -> list[tuple[str, int, int]]:
        return [(f.name, f.number, f.type) for f in message.DESCRIPTOR.fields]

    assert fields(pb.RenderPdfResponse) == fields(pb.RenderTemplateResponse)
    old = pb.RenderTemplateResponse(render_id="a" * 64, format=pb.IMAGE_FORMAT_PDF, page_count=3,
                                    page_width_pt=595.28, size_bytes=1234)
    new = pb.RenderPdfResponse.FromString(old.SerializeToString())
    assert (new.render_id, new.format, new.page_count, new.page_width_pt, new.size_bytes) == (
        old.render_id, old.format, old.page_count, old.page_width_pt, old.size_bytes)
