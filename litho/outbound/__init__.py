"""The outbound HTTP guard: the one way Litho fetches a URL on a user's behalf.

Template images fetched for Chromium, data bindings and webhooks all go through
:class:`OutboundGuard`, which refuses non-public destinations (unless
allow-listed by ``LITHO_OUTBOUND_ALLOW``) at parse time, at DNS resolution and
at socket creation, on every redirect hop, and bounds size and time.
"""

from litho.outbound._guard import FetchResult, OutboundGuard
from litho.outbound._headers import check_outbound_headers
from litho.outbound._policy import (
    DENIED_MESSAGE,
    AllowEntry,
    AllowList,
    check_url,
    is_public_address,
)

__all__ = [
    "DENIED_MESSAGE",
    "AllowEntry",
    "AllowList",
    "FetchResult",
    "OutboundGuard",
    "check_outbound_headers",
    "check_url",
    "is_public_address",
]
