"""The one look of every ehr-fed HTML report (statistics, evaluation, demo): page shell, tables, numbers.

Reports are single self-contained files: one stylesheet, figures embedded as PNG ``data:`` URIs, nothing
fetched from elsewhere.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:2px solid #4878a8;
padding-bottom:.15em}h3{font-size:1.05em;margin:1.2em 0 .3em}
table.t{border-collapse:collapse;font-size:13px;margin:.4em 0 1.2em}
table.t th,table.t td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}
table.t thead th{border-bottom:2px solid #888;background:#f3f6fa}
table.t tbody th{text-align:left;font-weight:normal}table.t td.l{text-align:left}
table.t thead th:first-child,table.t th.l{text-align:left}
table.t tr.sub th{padding-left:2em;color:#555}
.note{color:#555;font-size:13px}.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0}figcaption{font-size:13px;color:#555;text-align:center}
img{border:1px solid #eee}"""


def page(title: str, body: Iterable[str]) -> str:
    """A complete HTML document with the shared stylesheet."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def esc(text: Any) -> str:
    return html.escape(str(text))


def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def fmt_int(v: Any, missing: str = "-") -> str:
    """A count: ``1201``."""
    if is_missing(v):
        return missing
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return missing if math.isnan(f) else str(int(round(f)))


def fmt_num(v: Any, digits: int = 3, missing: str = "-") -> str:
    """A float with ``digits`` decimals (``-`` when missing)."""
    if is_missing(v):
        return missing
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return missing if math.isnan(f) else f"{f:.{digits}f}"


def fmt_p(v: Any) -> str:
    """A p-value: ``0.032``, ``<0.001``."""
    if is_missing(v):
        return "-"
    f = float(v)
    return "<0.001" if f < 0.001 else f"{f:.3f}"


def table(df: pd.DataFrame, formats: dict[str, Any] | None = None, *, index: bool = True,
          index_label: str | None = None, sub_rows: Iterable[Any] = (), left: Iterable[str] = ()) -> str:
    """``df`` as an HTML table in the shared style.

    Parameters
    ----------
    formats : dict, optional
        ``{column: function(value) -> str}``; columns without one: counts for integer dtypes, 3 decimals
        for floats, the text otherwise.
    sub_rows : index values shown indented (e.g. a variable's "missing" row under it).
    left : columns aligned left (text).
    """
    formats = formats or {}
    sub, left = set(sub_rows), set(left)
    names = list(df.index.names) if index else []
    head = "".join(f"<th>{esc(index_label if index_label is not None else (n or ''))}</th>"
                   for n in names[:1]) if index else ""
    head += "".join((f'<th class="l">{esc(c)}</th>' if c in left else f"<th>{esc(c)}</th>") for c in df.columns)
    rows = []
    for key, row in df.iterrows():
        cells = []
        for c in df.columns:
            fn = formats.get(c) or _default_format(df[c])
            cls = " class='l'" if c in left else ""
            cells.append(f"<td{cls}>{esc(fn(row[c]))}</td>")
        label = " / ".join(map(str, key)) if isinstance(key, tuple) else str(key)
        tr = " class='sub'" if key in sub else ""
        rows.append(f"<tr{tr}>" + (f"<th>{esc(label)}</th>" if index else "") + "".join(cells) + "</tr>")
    return f"<table class='t'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _default_format(col: pd.Series):
    if pd.api.types.is_bool_dtype(col):
        return lambda v: "yes" if v is True or v == 1 else ("no" if not is_missing(v) else "-")
    if pd.api.types.is_integer_dtype(col):
        return fmt_int
    if pd.api.types.is_float_dtype(col):
        return fmt_num
    return lambda v: "-" if is_missing(v) else str(v)


def figure(uri: str, caption: str) -> str:
    """An embedded figure (its title is drawn in the image; ``caption`` is the image's alt text)."""
    return f"<figure><img src='{uri}' alt='{esc(caption)}'></figure>"
