"""Command line of SynthSAEBench: ``sae-lens-ortho synthbench`` (also ``python -m`` this module).

sae-lens-ortho synthbench --config mini --out synthbench_out       # topk, batchtopk, matryoshka, every recipe
sae-lens-ortho synthbench --config mini --arm topk --arm topk_ortho --seeds 0 1 2 3
sae-lens-ortho synthbench --config small --arm batchtopk --arm decoder_ortho_batchtopk --l0 8 12 16
sae-lens-ortho synthbench --config 16k --device cuda --arm batchtopk --arm <recipe>   # the full benchmark
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "sae-lens-ortho synthbench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train registered SAE architectures on SynthSAEBench (SAELens synthetic ground truth), paired "
        "by seed, and write report.md, results.json and metric-vs-L0 plots.",
    )
    p.add_argument(
        "--config",
        default="mini",
        help="scale: micro (seconds per SAE), mini (CPU, ~1 min per SAE), small (CPU study), 16k (GPU)",
    )
    p.add_argument(
        "--arm",
        action="append",
        default=None,
        metavar="SPEC",
        help="an arm: ARCH, NAME=ARCH, NAME=ARCH:field=value,field=value, or a recipe name (repeat the flag); "
        "default: topk, batchtopk, matryoshka_batchtopk",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (paired across arms)")
    p.add_argument("--l0", type=int, nargs="+", default=None, help="target L0s (default: the scale's headline L0)")
    p.add_argument("--l0-sweep", action="store_true", help="use the scale's L0 sweep")
    p.add_argument("--samples", type=int, default=None, help="training samples per SAE (default: the scale's)")
    p.add_argument("--eval-samples", type=int, default=None, help="final-evaluation samples (default: the scale's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the scale's)")
    p.add_argument("--lr-warm-up-steps", type=int, default=None, help="linear lr warm-up steps (default: the scale's)")
    p.add_argument(
        "--lr-decay-steps", type=int, default=None, help="final steps of linear lr decay to 0 (default: the scale's)"
    )
    p.add_argument(
        "--epoch-rows",
        type=int,
        default=None,
        help="recorded rows that training replays as epochs (default: the scale's; 0: every training row new)",
    )
    p.add_argument(
        "--dead-feature-window",
        type=int,
        default=None,
        help="steps without firing that make a latent dead (SAELens's aux losses revive those; default: the scale's)",
    )
    p.add_argument("--model-seed", type=int, default=None, help="seed of the synthetic model (default: the scale's)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes (one torch thread each); every (arm, seed, L0) is a job with its own result file "
        "in OUT/runs, so a rerun skips finished jobs",
    )
    p.add_argument("--device", default="cpu", help="torch device (cuda: bf16 autocast like the published runs)")
    p.add_argument("--pair", action="append", default=None, metavar="ARM=BASE", help="report Δ of ARM vs BASE")
    p.add_argument("--out", default="synthbench_out", help="output folder")
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="keep the data streams on disk for later runs (default with --jobs > 1: OUT/streams)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="RESULTS_JSON",
        help="train nothing: combine results.json files of separate runs of one config into one report in --out",
    )
    p.add_argument(
        "--faithfulness",
        nargs=2,
        default=None,
        metavar=("BASE_JSON", "DOUBLE_JSON"),
        help="train nothing: check the proxy criteria (docs/synthbench.md) from results.json at the scale's budget "
        "and at twice it",
    )
    return p


def main(argv: Sequence[str] | None = None, prog: str = "sae-lens-ortho synthbench") -> int:
    args = build_parser(prog).parse_args(argv)
    from sae_lens_ortho.evals.synthetic.scales import get_scale
    from sae_lens_ortho.evals.synthetic.sweep import run_sweep
    from sae_lens_ortho.evals.synthetic.synthbench import SynthBenchSettings, parse_arms
    from sae_lens_ortho.evals.synthetic.synthbench_report import (
        format_leaderboard,
        format_synthbench_table,
        takeaway,
        write_synthbench_report,
    )

    if args.faithfulness:
        import json

        from sae_lens_ortho.evals.synthetic.faithfulness import faithfulness, format_faithfulness
        from sae_lens_ortho.evals.synthetic.synthbench import SynthBenchResults

        try:
            base, double = (SynthBenchResults.from_json(json.load(open(f))) for f in args.faithfulness)
        except (OSError, ValueError, KeyError) as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        print(format_faithfulness(faithfulness(base, double)))
        return 0
    if args.merge:
        import json

        from sae_lens_ortho.evals.synthetic.synthbench import SynthBenchResults

        try:
            results = SynthBenchResults.merge([SynthBenchResults.from_json(json.load(open(f))) for f in args.merge])
        except (OSError, ValueError, KeyError) as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        pairs = dict(p.split("=", 1) for p in args.pair) if args.pair else None
        path = write_synthbench_report(results, args.out, pairs)
        for l0 in results.settings.l0s:
            print(f"\nTarget L0 {l0}\n" + format_synthbench_table(results, l0, pairs))
        print(f"\nwrote {path}")
        return 0
    try:
        scale = get_scale(args.config)
        arms = parse_arms(args.arm) if args.arm else ()
        pairs = dict(p.split("=", 1) for p in args.pair) if args.pair else None
        l0s = tuple(scale.l0_sweep) if args.l0_sweep else tuple(args.l0 or ())
        settings = SynthBenchSettings(
            config=args.config, arms=arms, seeds=tuple(args.seeds), l0s=l0s, training_samples=args.samples,
            eval_samples=args.eval_samples, lr=args.lr, lr_warm_up_steps=args.lr_warm_up_steps,
            lr_decay_steps=args.lr_decay_steps, epoch_rows=args.epoch_rows, dead_feature_window=args.dead_feature_window, device=args.device,
            model_seed=args.model_seed, cache_dir=args.cache, progress=not args.quiet,
        ).resolved()  # fmt: skip
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        outcome = run_sweep(settings, args.out, jobs=args.jobs)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if not outcome.results.runs:
        print(f"{prog}: nothing finished; no report written", file=sys.stderr)
        return 130
    path = write_synthbench_report(outcome.results, args.out, pairs, total_jobs=outcome.total)
    for l0 in settings.l0s:
        print(f"\nTarget L0 {l0}\n" + format_leaderboard(outcome.results, l0, pairs))
        print("\n" + takeaway(outcome.results, l0, pairs, outcome.total))
    print(f"\nwrote {path} and {path.parent / 'results.json'} ({outcome.done} of {outcome.total} jobs)")
    return 130 if outcome.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m sae_lens_ortho.evals.synthetic.synthbench_cli"))
