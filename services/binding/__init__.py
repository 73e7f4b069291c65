"""The binding service: live data bindings (a template, a data source, a
mapping and a refresh policy behind a stable image URL ``/b/{id}.{ext}``),
the data they last fetched or were pushed, and the TTL cache of the data
sources that templates declare. Every fetch goes through the outbound guard."""
