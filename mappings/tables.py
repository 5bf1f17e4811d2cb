"""Lookup tables kept beside the routes: CSV files read once, checked at load, looked up in O(1).

A table is a UTF-8 CSV file (RFC 4180, comma separated) whose first row
names the columns; the first column is the key unless a rule says otherwise.
Every problem is reported as ``file:line: text`` so that `hub check` can show
it: a row with the wrong number of cells, an empty or duplicate key.

Files are cached by path, size and modification time: a route that names a
table loads it once, and a changed file is read again on the next load.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

__all__ = ["LookupTable", "load_table"]


@dataclasses.dataclass(frozen=True)
class LookupTable:
    """Rows of one CSV table, indexed by the key column."""

    path: Path
    columns: tuple[str, ...]
    key: str
    rows: dict[str, dict[str, str]]

    def get(self, key: str) -> dict[str, str] | None:
        return self.rows.get(key)


_cache: dict[tuple[Path, str], tuple[int, int, LookupTable]] = {}  # one entry per table file


def load_table(path: Path, *, key: str | None = None) -> LookupTable:
    """Read a CSV table; ValueError reading ``file:line: problem`` when it is unusable."""
    path = path.resolve()
    try:
        stat = path.stat()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read table ({exc.strerror})") from None
    cache_key = (path, key or "")
    cached = _cache.get(cache_key)
    if cached is not None and cached[:2] == (stat.st_size, stat.st_mtime_ns):
        return cached[2]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}:1: cannot read table as UTF-8 ({type(exc).__name__})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header or not all(c.strip() for c in header):
        raise ValueError(f"{path}:1: the first row must name every column")
    columns = tuple(c.strip() for c in header)
    if len(set(columns)) != len(columns):
        raise ValueError(f"{path}:1: a column name is repeated")
    key = key or columns[0]
    if key not in columns:
        raise ValueError(f"{path}:1: no column {key!r} (columns: {', '.join(columns)})")
    k = columns.index(key)
    rows: dict[str, dict[str, str]] = {}
    for cells in reader:
        line = reader.line_num
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) != len(columns):
            raise ValueError(f"{path}:{line}: {len(cells)} cells, the header has {len(columns)}")
        value = cells[k].strip()
        if not value:
            raise ValueError(f"{path}:{line}: empty key in column {key!r}")
        if value in rows:
            raise ValueError(f"{path}:{line}: key {value!r} is already on an earlier row")
        rows[value] = {c: cell.strip() for c, cell in zip(columns, cells, strict=True)}
    table = LookupTable(path, columns, key, rows)
    _cache[cache_key] = (stat.st_size, stat.st_mtime_ns, table)
    return table
