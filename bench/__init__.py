"""``make bench``: measurements written to bench/report.md and bench/report.json."""
