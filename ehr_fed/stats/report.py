"""Federated statistics report: JSON or HTML (tables and a few histograms as embedded PNG)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehr_fed.stats.describe import describe, describe_by_site, table_one
from ehr_fed.stats.federated import _columns, fine_histograms


def build_report(fed, columns=None, n_histograms: int = 4, hist_bins: int = 32) -> dict[str, Any]:
    """Every summary of the federation as plain data (DataFrames kept for rendering)."""
    cols = _columns(fed, columns)
    h = fine_histograms(fed, cols[:n_histograms], bins=hist_bins) if n_histograms else None
    hists = {}
    if h is not None:
        for j, c in enumerate(cols[:n_histograms]):
            hists[c] = {"edges": h.edges[j].tolist(), "counts": np.nan_to_num(h.counts[0, j]).tolist(),
                        "merged": [[a, b] for a, b, _ in h.groups(0, j) if b > a]}
    return {
        "sites": fed.site_ids,
        "table_one": table_one(fed, cols),
        "overall": describe(fed, cols),
        "by_label": describe(fed, cols, by="label", quantile_levels=None),
        "by_site": describe_by_site(fed, cols),
        "histograms": hists,
    }


def _df_json(df: pd.DataFrame) -> Any:
    out = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    return json.loads(out.to_json(orient="records"))


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    data = {k: _df_json(v) if isinstance(v, pd.DataFrame) else v for k, v in report.items()}
    if isinstance(report.get("table_one"), pd.DataFrame):
        data["table_one"] = json.loads(report["table_one"].to_json(orient="index"))
    Path(path).write_text(json.dumps(data, indent=1, default=str))
    return Path(path)


def _png(col: str, hist: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"])
    fig, ax = plt.subplots(figsize=(4, 2.6), dpi=90)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4878a8", edgecolor="white")
    ax.set_title(col)
    ax.set_ylabel("rows")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>ehr-fed federated statistics</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eef}
.note{color:#555;font-size:90%}</style></head><body>
<h1>Federated statistics</h1>
<p class="note">Sites: {{ sites|join(", ") }}. Every number is an aggregate released under each site's
privacy policy; "suppressed" / empty cells held fewer rows than the minimum cell count.</p>
<h2>Table 1</h2>{{ table_one }}
<h2>Histograms</h2>{% for name, png in pngs %}<img alt="{{ name }}" src="data:image/png;base64,{{ png }}">{% endfor %}
<p class="note">Histograms span each feature's robust range (the few most extreme rows fall in the end
bins); bins with fewer rows than the minimum are merged with their neighbours.</p>
<h2>All features</h2>{{ overall }}
<h2>By label</h2>{{ by_label }}
<h2>By site</h2>{{ by_site }}
</body></html>"""


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    import jinja2

    fmt = {"float_format": lambda v: f"{v:.3f}", "na_rep": "suppressed"}
    html = jinja2.Environment(autoescape=False).from_string(_HTML).render(
        sites=report["sites"],
        table_one=report["table_one"].to_html(),
        overall=report["overall"].to_html(**fmt),
        by_label=report["by_label"].to_html(**fmt),
        by_site=report["by_site"].to_html(**fmt),
        pngs=[(c, _png(c, h)) for c, h in report["histograms"].items()],
    )
    Path(path).write_text(html)
    return Path(path)
