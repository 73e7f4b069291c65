"""The gateway: Litho's public HTTP edge (aiohttp). Authenticates, validates
requests against the OpenAPI document, translates to gRPC, maps gRPC status
to HTTP in one place, and serves rendered images."""
