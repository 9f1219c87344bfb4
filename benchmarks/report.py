"""The bench's outputs: results.md (a table a person reads), results.json (every run), results.png."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One measurement: medians over its repetitions, the target and whether it was met."""

    key: str
    phase: int
    label: str
    n: int
    unit: str  # "msg/s", "rows/s" or "MiB"
    value: float | None = None
    runs: list[float] = field(default_factory=list)
    ratio_go: float | None = None
    cpu: dict[str, float | None] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None
    note: str = ""
    error: str = ""
    detail: list[dict[str, Any]] = field(default_factory=list)


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M {unit}"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k {unit}"
    return f"{value:.0f} {unit}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}%"


def _spread(row: Row) -> str:
    if len(row.runs) < 2:
        return ""
    lo, hi = min(row.runs), max(row.runs)
    short = fmt_value(lo, row.unit).split()[0] + "–" + fmt_value(hi, row.unit).split()[0]
    return f"runs {short}"


def _short(error: str, limit: int = 240) -> str:
    """First and last line of an error (a traceback's tail says what happened), for a table cell."""
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table(rows: list[Row]) -> str:
    head = (
        "| phase | measurement | N | result | × Go | client CPU | broker CPU | machine CPU "
        "| target | met | notes |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        result = f"**error**: {_short(r.error)}" if r.error else fmt_value(r.value, r.unit)
        ratio = "–" if r.ratio_go is None else f"{r.ratio_go:.2f}"
        met = "–" if r.met is None else ("yes" if r.met else "**no**")
        notes = "; ".join(x for x in (r.note, _spread(r)) if x)
        cells = [
            str(r.phase),
            r.label,
            f"{r.n:,}",
            result.replace("|", "/"),
            ratio,
            _pct(r.cpu.get("client")),
            _pct(r.cpu.get("broker")),
            _pct(r.cpu.get("machine")),
            r.target or "–",
            met,
            notes or "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(meta: dict[str, Any], rows: list[Row], notes: list[str]) -> str:
    machine = meta["machine"]
    parts = [
        f"# bulk-import benchmark{' (quick)' if meta['quick'] else ''}",
        "",
        f"- command: `{meta['command']}` (in `{meta['cwd']}`)",
        f"- date: {meta['date']}; took {meta['runtime_s'] / 60:.1f} min",
        f"- machine: {machine['nproc']} CPUs ({machine['cpu_model']}), RabbitMQ {machine['rabbitmq']}, "
        f"Python {machine['python']}, polars {machine['polars']}; load average at start "
        f"{machine['loadavg']}",
        f"- each figure is the median of {meta['rounds']} repetition(s), the publishers interleaved "
        "(odd rounds in reverse order) so drift hits all alike; compare ratios, not absolute rates",
        "- CPU is % of one core over the measured window (machine: all cores summed, "
        f"{machine['nproc'] * 100}% = all busy); broker = the beam.smp process",
        "",
        table(rows),
        "",
    ]
    if notes:
        parts += ["Notes:", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(parts)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def write_json(path: Path, meta: dict[str, Any], rows: list[Row], notes: list[str]) -> None:
    doc = {"meta": meta, "notes": notes, "measurements": [asdict(r) for r in rows]}
    path.write_text(json.dumps(_rounded(doc), indent=2, ensure_ascii=False) + "\n")


def write_png(path: Path, rows: list[Row], title: str, n: int) -> None:
    """Horizontal bars of msg/s per publisher (and end to end), Go's rate as a reference line.

    ``n`` is the message count the title names; bars measured with another count say theirs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [r for r in rows if r.phase in (2, 3, 4, 5) and r.value is not None]
    if not bars:
        path.unlink(missing_ok=True)  # no publish phase ran: a chart from an earlier run would mislead
        return
    go = next((r.value for r in bars if r.key.startswith("publish:go-amqp091")), None)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(bars) + 1.6))
    labels = [r.label + ("" if r.n == n else f" ({r.n:,})") for r in bars][::-1]
    values = [r.value or 0.0 for r in bars][::-1]
    colors = ["tab:blue" if r.key.startswith("publish:bulk-import") else "tab:gray" for r in bars][::-1]
    colors = ["tab:green" if r.phase == 5 else c for r, c in zip(bars[::-1], colors, strict=True)]
    ax.barh(labels, values, color=colors)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v / 1e3:.1f}k", va="center", fontsize=8)
    if go:
        ax.axvline(go, color="tab:red", linestyle="--", linewidth=1, label=f"Go amqp091 {go / 1e3:.1f}k")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("messages (rows) per second, median")
    ax.set_xlim(0, max(values) * 1.15)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
