"""``make bench`` at its quick size: all five tables are written and every agreement check holds.

Timings and memory are not asserted (they are claims for the benchmark, not for a unit test); the columns
that compare results are."""

from pathlib import Path

from sae_lens_ortho.bench import main


def _table(text: str, title: str) -> list[list[str]]:
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    headers = ("| d", "| m ", "| architecture", "| variant")
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith(headers)]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_quick_bench_writes_every_table_and_the_results_agree(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    main(["--size", "quick", "--out", str(out)])
    text = out.read_text()
    selection = _table(text, "Pair selection")
    assert selection and all(row[-2] == "exact" and row[-1] == "exact" for row in selection)
    assert len(_table(text, "Training step")) == 1
    decoder = _table(text, "Decoder penalty")
    assert decoder and all(float(row[7]) < 1e-5 for row in decoder)  # identity == m x m Gram
    micro = _table(text, "Gradient accumulation")
    assert [row[0] for row in micro] == ["topk_ortho", "standard_ortho"]
    assert all(float(row[-1]) < 1e-4 for row in micro)  # same gradient with and without micro-batches
    mechanisms = _table(text, "Seed mechanisms")
    assert next(row[0] for row in mechanisms) == "standard_ortho" and len(mechanisms) == 4
