"""The sandbox that checks uploaded fonts: :class:`litho.sandbox.Sandbox`
with fontTools and brotli loaded in each worker and the font settings named
in its refusals."""

from __future__ import annotations

from litho import sandbox
from litho.sandbox import SandboxLimit

__all__ = ["Sandbox", "SandboxLimit"]


class Sandbox(sandbox.Sandbox):
    def __init__(self, *, workers: int, memory_bytes: int, timeout: float,
                 max_waiting: int) -> None:
        super().__init__(
            workers=workers, memory_bytes=memory_bytes, timeout=timeout,
            max_waiting=max_waiting, preload=("brotli", "fontTools.ttLib"),
            busy=(f"{max_waiting} font uploads are already waiting to be checked "
                  "(LITHO_TEMPLATE_FONT_PARSE_QUEUE); retry shortly"),
            start_failure=("the font checker cannot start its worker process; if "
                           "LITHO_TEMPLATE_FONT_PARSE_MEMORY is very low, raise it"))
