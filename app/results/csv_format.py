"""CSV as the exports write it: UTF-8, a header row, RFC 4180 quoting, ``\\n`` line ends, and
one text form per value type (ISO 8601 UTC times, ``true``/``false``, JSON for dicts and lists,
empty for None and NaN), so that the files open alike in pandas and R."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

CSV_FLUSH_BYTES = 64 * 1024


def _cell(v: Any) -> str:
    t = type(v)
    if t is str:
        return v  # type: ignore[no-any-return]
    if v is None:
        return ""
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.timezone.utc).isoformat()
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def csv_chunks(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    """CSV (UTF-8, header first, RFC 4180 quoting, ``\\n`` line ends) in chunks of about 64 KiB."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row.get(c)) for c in columns])
        if buf.tell() >= CSV_FLUSH_BYTES:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    with open(path, "wb") as f:
        for chunk in csv_chunks(columns, rows):
            f.write(chunk)
