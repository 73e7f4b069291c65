"""``nx-27017`` with one fix, run as a script by :mod:`tests.support.nx27017`.

neosqlite (under nx-27017 0.8.1) builds a compound index's columns from
``parse_json_path``, which answers ``_id`` for ``_id`` (that field lives in a
column of its own): ``json_extract(data, '_id')`` is then an invalid path and
every later insert into the collection fails ("JSON path error near '_id'"),
where MongoDB accepts an index such as ``(status, _id)``. Here the index
manager gets ``$._id`` instead: always NULL, so such an index orders nothing
by ``_id`` and never refuses a document, as ``_id`` is unique anyway.
"""

from __future__ import annotations

import sys


def main() -> int:
    from neosqlite.collection import index_manager  # type: ignore[import-untyped]
    from nx_27017.nx_27017 import main as serve  # type: ignore[import-untyped]

    original = index_manager.parse_json_path

    def parse_json_path(field: str) -> str:
        path: str = original(field)
        return "$._id" if path == "_id" else path

    index_manager.parse_json_path = parse_json_path
    result: int | None = serve()
    return result or 0


if __name__ == "__main__":
    sys.exit(main())
