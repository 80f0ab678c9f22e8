"""``make synthbench-gpu``: SynthSAEBench-16k on a lent GPU in under 8 minutes, everything under one folder.

    python -m sae_lens_ortho.evals.synthetic.gpu --out synthbench_gpu                # on the GPU
    python -m sae_lens_ortho.evals.synthetic.gpu --out /tmp/g --config micro --device cpu --minutes 1   # the test

It builds the scale's synthetic model, measures training steps/s of the slowest arm (two short runs: the slope
removes the fixed cost of building and evaluating), picks the largest training budget at which every arm fits the
time left (at most the published 200M samples), then trains the candidate, its base, BatchTopK and Matryoshka from
the same initial weights and the same batches (``synthbench`` jobs, one result file each, so a run cut short keeps
what finished) and writes ``report.md``, ``results.json``, the plot, ``budget.json`` and ``log.txt`` under --out.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from sae_lens_ortho.evals.synthetic.scales import get_scale

__all__ = ["CANDIDATE_ARMS", "main"]

# The lead of docs/synthbench.md (Matryoshka with the co-active decoder penalty at 0.03) and the arms it must beat.
CANDIDATE_ARMS = (
    "matryoshka_coactive_0.03=matryoshka_batchtopk_ortho:ortho_target=decoder,ortho_select_by=activations,"
    "ortho_pair_fraction=0.001,ortho_weighting=squared,ortho_scale=input_energy,ortho_coefficient=0.03",
    "matryoshka_batchtopk",
    "batchtopk",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sae_lens_ortho.evals.synthetic.gpu", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--out", default="synthbench_gpu", help="output folder (everything lands here)")
    p.add_argument("--config", default="16k", help="scale (16k on the GPU; micro for the CPU test)")
    p.add_argument("--device", default="cuda", help="torch device")
    p.add_argument("--minutes", type=float, default=7.5, help="wall-clock budget of the whole run")
    p.add_argument("--arm", action="append", default=None, help="arms (default: the candidate, its base, BatchTopK)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the data")
    p.add_argument("--eval-samples", type=int, default=None, help="final-evaluation samples (default: scale's / 5)")
    return p


def _probe(settings, arm, samples: int):  # noqa: ANN001, ANN202  (settings: SynthBenchSettings)
    """Seconds to train ``arm`` on ``samples`` rows (its own evaluation kept small)."""
    from sae_lens_ortho.evals.synthetic.sweep import Job, run_job

    probe = settings.__class__(**{**settings.__dict__, "training_samples": samples, "lr_warm_up_steps": 0,
                                  "lr_decay_steps": 0, "eval_samples": settings.scale().batch_size})  # fmt: skip
    t0 = time.perf_counter()
    run_job(Job(probe, probe.scale(), arm, 0, probe.l0s[0]), lambda _m: None)
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from sae_lens_ortho.evals.synthetic.sweep import run_sweep
    from sae_lens_ortho.evals.synthetic.synthbench import SynthBenchSettings, parse_arms
    from sae_lens_ortho.evals.synthetic.synthbench_report import write_synthbench_report

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("synthbench-gpu: no CUDA device here (use --device cpu for the CPU check)")
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / "log.txt"

    def log(line: str) -> None:
        print(line, flush=True)
        with open(log_file, "a") as f:
            f.write(line + "\n")

    scale = get_scale(args.config)
    arms = parse_arms(args.arm or list(CANDIDATE_ARMS))
    eval_samples = args.eval_samples or max(
        scale.batch_size, scale.eval_samples // 5 // scale.batch_size * scale.batch_size
    )
    base = SynthBenchSettings(config=args.config, arms=arms, seeds=(args.seed,), device=args.device,
                              eval_samples=eval_samples, heldout_samples=min(20_000, eval_samples),
                              record_stream=False, progress=True)  # fmt: skip
    try:
        base = base.resolved()
        slowest = next((a for a in arms if "matryoshka" in a.architecture), arms[0])
        b = scale.batch_size
        short, long = _probe(base, slowest, 16 * b), _probe(base, slowest, 64 * b)
        per_step = max((long - short) / 48, 1e-6)
        fixed = max(short - 16 * per_step, 0.0)
        left = args.minutes * 60 - (time.perf_counter() - start) - 20  # 20 s for the report
        steps = int((left / len(arms) - fixed) / per_step)
        samples = min(scale.training_samples, max(steps, 16) * b)
        budget = {"seconds_per_step": per_step, "fixed_seconds_per_arm": fixed, "steps_per_second": 1 / per_step,
                  "training_samples": samples, "published_samples": scale.training_samples,
                  "share_of_published": samples / scale.training_samples, "probe_arm": slowest.name,
                  "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device}  # fmt: skip
        (out / "budget.json").write_text(json.dumps(budget, indent=1))
        log(f"synthbench-gpu {scale.name}: {1 / per_step:.1f} steps/s ({slowest.name}), fixed {fixed:.0f} s per arm; "
            f"{samples:,} samples per arm ({samples / scale.training_samples:.1%} of the published budget)")  # fmt: skip
        settings = SynthBenchSettings(**{**base.__dict__, "training_samples": samples, "lr_warm_up_steps": None,
                                         "lr_decay_steps": None})  # fmt: skip
        outcome = run_sweep(settings, out, log=log)
        path = write_synthbench_report(outcome.results, out, total_jobs=outcome.total)
        log(f"wrote {path} ({outcome.done} of {outcome.total} arms) in {(time.perf_counter() - start) / 60:.1f} min")
    except Exception:
        log("FAILED:\n" + traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
