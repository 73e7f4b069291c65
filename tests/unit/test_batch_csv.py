"""A batch's variable sets from CSV (services/gateway/_csv.py)."""

from __future__ import annotations

import pytest

from litho.errors import InvalidArgument
from services.gateway._csv import variable_sets


def test_rows_become_nested_text_variables() -> None:
    data = ('\ufeff\ufeffname,product.price,product.name,note\n'
            'A,1,x,"two\nlines, and a comma"\n'
            '\n'
            'B,,y,\n').encode()
    assert list(variable_sets(data, max_items=10, max_depth=8, max_columns=10)) == [
        {"name": "A", "product": {"price": "1", "name": "x"}, "note": "two\nlines, and a comma"},
        # An empty cell leaves the variable unset (its default applies).
        {"name": "B", "product": {"name": "y"}},
    ]


@pytest.mark.parametrize(("data", "field", "words"), [
    (b"", "body", "is empty"),
    (b"a\n", "variableSets", "no data rows"),
    (b"a,b\n1\n", "row 2", "has 1 fields; the header has 2"),
    (b"a\n1\n2,3\n", "row 3", "has 2 fields"),
    (b"a\n\xff\n", "body", "not UTF-8 text (line 2"),
    (b"a,a\n1,2\n", "column 2", "repeats"),
    (b"a.b,a\n1,2\n", "column 2", "clashes with 'a.b'"),
    (b"a,a.b\n1,2\n", "column 2", "clashes with 'a'"),
    (b"a,\n1,2\n", "column 2", "no name"),
    (b"a..b\n1\n", "column 1", "empty part"),
    (b"a.b.c.d\n1\n", "column 1", "deeper than 3"),
    (b'a\n"open\n', "line 2", "cannot be read as CSV"),
    (b"a\n1\x002\n", "row 2", "NUL"),
    (b"a\n1\n2\n3\n", "variableSets", "more than 2 rows (LITHO_BATCH_MAX_ITEMS)"),
    (b"a,b,c,d\n1,2,3,4\n", "body", "4 columns; at most 3 (LITHO_BATCH_MAX_CSV_COLUMNS)"),
])
def test_malformed_csv_names_the_row_or_column(data: bytes, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        list(variable_sets(data, max_items=2, max_depth=3, max_columns=3))
    assert words in caught.value.message
    assert [e.field for e in caught.value.errors] == [field]
