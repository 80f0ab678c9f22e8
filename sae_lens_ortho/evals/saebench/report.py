"""Results, tables and plots of :func:`sae_lens_ortho.evals.saebench.run.run_saebench`.

:class:`SaebenchResult` (what a run wrote), :func:`collect_results` (SAEBench's JSONs back into one row per SAE)
and :func:`write_report` (``saebench_table.md`` / ``.csv``, ``saebench_summary.json`` and the plots against L0).
Re-exported by :mod:`sae_lens_ortho.evals.saebench.run`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_lens_ortho.evals.saebench.diagnostics import result_path
from sae_lens_ortho.evals.saebench.specs import HEADLINE_METRICS, REPORT_ONLY_SUITES, SaeSpec

# The logger of sae_lens_ortho.evals.saebench.run, where this code was before the split: log records keep their name.
log = logging.getLogger("sae_lens_ortho.evals.saebench.run")


@dataclass
class SaebenchResult:
    out_dir: Path
    artifacts_dir: Path
    saes: list[SaeSpec]
    suites: list[str]
    result_files: dict[str, dict[str, Path]] = field(default_factory=dict)
    """SAE name -> suite -> SAEBench JSON."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    table_md: Path | None = None
    table_csv: Path | None = None
    summary_json: Path | None = None
    plots: list[Path] = field(default_factory=list)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    """(SAE name, suite) -> why there is no result."""
    timings: dict[str, float] = field(default_factory=dict)


def _flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for category, values in metrics.items():
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            flat[f"{category}.{key}"] = float(value)
    return flat


def collect_results(result: SaebenchResult) -> list[dict[str, Any]]:
    """Read the SAEBench JSONs of ``result`` back into one row per SAE (``suite/category.metric`` columns)."""
    rows = []
    for spec in result.saes:
        row: dict[str, Any] = {
            "sae": spec.name,
            "source": spec.source,
            "kind": spec.kind,
            "model": spec.model_name,
            "hook": spec.hook_name,
            "d_sae": spec.d_sae,
        }
        files: dict[str, Path] = {}
        for suite in result.suites:
            path = result_path(result.out_dir / "eval_results", suite, spec)
            if not path.exists() or (spec.name, suite) in result.failures:
                continue
            files[suite] = path
            data = json.loads(path.read_text())
            for key, value in _flatten_metrics(data.get("eval_result_metrics") or {}).items():
                row[f"{suite}/{key}"] = value
            if spec.d_sae is None and isinstance(data.get("sae_cfg_dict"), dict):
                row["d_sae"] = data["sae_cfg_dict"].get("d_sae")
                row["hook"] = row["hook"] or _cfg_hook(data["sae_cfg_dict"])
        row["l0"] = row.get("core/sparsity.l0", spec.cfg_l0)
        result.result_files[spec.name] = files
        rows.append(row)
    result.rows = rows
    return rows


def _cfg_hook(cfg: Mapping[str, Any]) -> str | None:
    return cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _headline_columns(suites: Sequence[str], report_only: bool) -> list[tuple[str, str]]:
    cols = []
    for suite in suites:
        if (suite in REPORT_ONLY_SUITES) != report_only:
            continue
        for category, metric, direction in HEADLINE_METRICS.get(suite, []):
            arrow = {"+": " ↑", "-": " ↓"}.get(direction, "")
            cols.append((f"{suite}/{category}.{metric}", f"{suite} {metric}{arrow}"))
    return cols


def _markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    present = [(k, title) for k, title in columns if any(r.get(k) is not None for r in rows)]
    header = ["SAE", "L0"] + [title for _, title in present if not title.startswith("core l0")]
    keys = ["sae", "l0"] + [k for k, title in present if not title.startswith("core l0")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    return lines


def write_report(result: SaebenchResult, plots: bool = True) -> None:
    """Write the Markdown and CSV tables, the summary JSON and (if matplotlib is installed) the plots."""
    out = result.out_dir
    rows = result.rows or collect_results(result)
    lines = [
        "# SAEBench results",
        "",
        f"Suites: {', '.join(result.suites)}. SAEBench JSONs: `{out / 'eval_results'}`; "
        f"artifacts: `{result.artifacts_dir}`. ↑ higher is better, ↓ lower is better.",
        "",
        "## Headline metrics",
        "",
    ]
    headline = _headline_columns(result.suites, report_only=False)
    if any(r.get(k) is not None for r in rows for k, _ in headline):
        lines += _markdown_table(rows, headline)
    else:
        lines += ["_No headline metric in this run._"]
    if any(s in REPORT_ONLY_SUITES for s in result.suites):
        lines += [
            "",
            "## Reported, not headlined: SCR / TPP",
            "",
            "SCR and TPP were judged unreliable at SAEBench's canonical settings (Chanin 2026, arXiv 2605.18229); "
            "they are listed for completeness and should not rank SAEs.",
            "",
            *_markdown_table(rows, _headline_columns(result.suites, report_only=True)),
        ]
    if "absorption" in result.suites:
        lines += [
            "",
            "Absorption is only meaningful for LLMs with at least 1B parameters and SAEs with at least 16k latents.",
        ]
    if result.failures:
        lines += ["", "## Missing results", ""]
        lines += [f"- {suite} / {name}: {why}" for (name, suite), why in sorted(result.failures.items())]
    result.table_md = out / "saebench_table.md"
    result.table_md.write_text("\n".join(lines) + "\n")

    fixed = ["sae", "source", "kind", "model", "hook", "d_sae", "l0"]
    metric_keys = sorted({k for r in rows for k in r if k not in fixed})
    result.table_csv = out / "saebench_table.csv"
    with result.table_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fixed + metric_keys, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in fixed + metric_keys})

    result.summary_json = out / "saebench_summary.json"
    result.summary_json.write_text(
        json.dumps(
            {
                "suites": result.suites,
                "rows": rows,
                "result_files": {n: {s: str(p) for s, p in f.items()} for n, f in result.result_files.items()},
                "failures": [{"sae": n, "suite": s, "reason": w} for (n, s), w in sorted(result.failures.items())],
                "timings_s": result.timings,
            },
            indent=2,
            default=str,
        )
    )
    if plots:
        result.plots = _plot_against_l0(result, rows)


def _plot_against_l0(result: SaebenchResult, rows: list[dict[str, Any]]) -> list[Path]:
    try:  # the object-oriented API: no pyplot, no global backend switch
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed: no SAEBench plots")
        return []
    folder = result.out_dir / "plots"
    written: list[Path] = []
    columns = _headline_columns(result.suites, False) + _headline_columns(result.suites, True)
    for key, title in columns:
        if key.endswith("sparsity.l0"):
            continue
        points = [(r["l0"], r[key], r["sae"]) for r in rows if r.get("l0") is not None and r.get(key) is not None]
        if not points:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        fig = Figure(figsize=(5, 3.6))
        ax = fig.subplots()
        # one point per SAE: SAEs are not a sweep, so no connecting line
        ax.scatter([p[0] for p in points], [p[1] for p in points], zorder=3)
        for x, y, n in points:
            ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        xs = [p[0] for p in points]
        if min(xs) > 0 and max(xs) / min(xs) > 10:
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("L0")
        ax.set_ylabel(title)
        ax.set_title(title + (" (report only)" if key.split("/")[0] in REPORT_ONLY_SUITES else ""), fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = folder / (re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_") + ".png")
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
