"""Litho's shared infrastructure: configuration, logging, lifecycle, gRPC and NATS
helpers, the document-store and blob-store ports, and the outbound HTTP guard.

Nothing here knows about templates or renders; domain code lives in ``services``.
Generated protobuf code also lands under this package (``litho.<service>.v1``),
produced by ``make proto`` from ``proto/``.
"""
