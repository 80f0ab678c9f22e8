"""The stability check: the step table run twice, back to back, in two fresh processes, and compared.

    python -m sae_lens_ortho.bench.stability --out docs/performance.md -- --size cpu --threads 1 --cpu-sort torch

Everything after ``--`` goes to each run of ``python -m sae_lens_ortho.bench --only step``. The check passes
when, for every row, the two runs' median time ratios (wall and CPU time) differ by at most 0.03 and the peak
memory ratios by at most 0.01. Both tables and the comparison replace the block between the stability markers
of ``--out`` (the rest of the file is kept; the block is appended where there is none). Exit status 1 when the
bound is not met, so a script notices.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sae_lens_ortho.bench.steps import StepRow

BEGIN, END = "<!-- stability:begin -->", "<!-- stability:end -->"
TIME_BOUND, MEMORY_BOUND = 0.03, 0.01


@dataclass(frozen=True)
class Difference:
    row: str
    wall: float
    cpu: float
    memory: float

    def within(self) -> bool:
        eps = 1e-9  # a difference printed as 0.030 is within ±0.03
        return max(self.wall, self.cpu) <= TIME_BOUND + eps and self.memory <= MEMORY_BOUND + eps


def row_key(r: StepRow) -> str:
    s = r.shape
    return f"{r.variant} vs {r.base}, {s.d_in}x{s.d_sae}, k {s.k}, batch {s.batch}"


def compare(a: list[StepRow], b: list[StepRow]) -> list[Difference]:
    """|run A - run B| of every ratio, row by row (rows matched by variant, base and shape)."""
    by_key = {row_key(r): r for r in b}
    missing = [row_key(r) for r in a if row_key(r) not in by_key]
    if missing or len(a) != len(b):
        raise ValueError(f"the two runs have different rows: {missing or 'counts differ'}")
    out = []
    for r in a:
        q = by_key[row_key(r)]
        out.append(
            Difference(
                row_key(r),
                abs(r.wall.median - q.wall.median),
                abs(r.cpu.median - q.cpu.median),
                abs(r.peak_ratio - q.peak_ratio),
            )
        )
    return out


def comparison_table(a: list[StepRow], b: list[StepRow]) -> str:
    diffs = compare(a, b)
    lines = [
        "| row | wall A | wall B | Δ wall | CPU A | CPU B | Δ CPU | peak A | peak B | Δ peak | within bounds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    by_key = {row_key(r): r for r in b}
    for r, d in zip(a, diffs):
        q = by_key[d.row]
        lines.append(
            f"| {d.row} | {r.wall.median:.3f} | {q.wall.median:.3f} | {d.wall:.3f} | {r.cpu.median:.3f} "
            f"| {q.cpu.median:.3f} | {d.cpu:.3f} | {r.peak_ratio:.3f} | {q.peak_ratio:.3f} | {d.memory:.3f} "
            f"| {'yes' if d.within() else 'NO'} |"
        )
    worst = Difference("max", max(d.wall for d in diffs), max(d.cpu for d in diffs), max(d.memory for d in diffs))
    lines.append("")
    lines.append(
        f"Largest differences: wall {worst.wall:.3f}, CPU time {worst.cpu:.3f} (bound ±{TIME_BOUND}), peak "
        f"memory {worst.memory:.3f} (bound ±{MEMORY_BOUND}): **{'within' if worst.within() else 'NOT within'} "
        "the stability bound**."
    )
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the markers replaced by ``block`` (appended when there are no markers)."""
    wrapped = f"{BEGIN}\n{block.strip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + wrapped + rest.split(END, 1)[1]
    return (text.rstrip() + "\n\n" if text.strip() else "") + wrapped + "\n"


def run_once(i: int, work: Path, bench_args: list[str]) -> tuple[list[StepRow], str]:
    md, js = work / f"run{i}.md", work / f"run{i}.json"
    cmd = [sys.executable, "-m", "sae_lens_ortho.bench", "--only", "step", "--out", str(md), "--json", str(js)]
    print("$", " ".join(cmd + bench_args), flush=True)
    subprocess.run(cmd + bench_args, check=True)
    payload = json.loads(js.read_text())
    rows = [StepRow.from_json(d) for d in payload["rows"]]
    env = payload["environment"]
    table = md.read_text().split("## ", 1)[1]
    return rows, f"**Run {'AB'[i]}** ({env})\n\n#### {table.strip()}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, bench_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description="Run the step table twice and check that the ratios agree.")
    p.add_argument("--out", default="docs/performance.md", help="Markdown file whose stability block is replaced")
    p.add_argument("--work", default="bench_out/stability", help="folder for each run's Markdown and JSON")
    args = p.parse_args(ours)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    (a, text_a), (b, text_b) = run_once(0, work, bench_args), run_once(1, work, bench_args)
    block = "\n\n".join(
        [
            "### The step table twice, back to back",
            f"`python -m sae_lens_ortho.bench.stability --out {args.out} -- {' '.join(bench_args)}`",
            comparison_table(a, b),
            text_a,
            text_b,
        ]
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(replace_block(out.read_text() if out.exists() else "", block))
    print(comparison_table(a, b))
    print(f"wrote {out}")
    return 0 if all(d.within() for d in compare(a, b)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
