"""Where the API says a stored image can be fetched: the gateway's names for
the rule :mod:`litho.renders` states once (the webhook service follows it
too, so a ``render.completed`` payload's ``url`` is an API answer's).

By default that is the gateway's own ``/images/<renderId>.<ext>``. With
``LITHO_IMAGE_BASE_URL`` set, it is ``<that base>/<blob key>``.
"""

from __future__ import annotations

from litho.renders import check_image_base_url, image_url

__all__ = ["check_image_base_url", "image_url"]
