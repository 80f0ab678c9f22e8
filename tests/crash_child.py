"""A real training process for the kill tests (test use only): ``python crash_child.py MODE ROOT [options]``.

Trains ``topk_ortho`` on the tiny offline model through SAELens's runner, long enough to be signalled, with
frequent checkpoints under ``ROOT/checkpoints``; MODE picks the runner:

* ``ours``: :func:`sae_lens_ortho.training.train` (the crash-safe runner);
* ``cli``: ``sae-lens-ortho train`` (``sae_lens_ortho_cli.main``) with the model loader pointed at the tiny model;
* ``plain``: SAELens's own ``LanguageModelSAETrainingRunner`` (what the tests compare against).

``--pause-in-output S`` sleeps S seconds inside the final output save (printed as ``OUTPUT``); ``--normalize``,
``--final-checkpoint`` and ``--ortho C`` change the config. ``--pause-in-write N`` sleeps for a minute in the middle of the N-th checkpoint write (after the SAE files, before
the store state; printed as ``WRITING``), so that a SIGKILL lands inside a write. ``--resume PATH`` resumes.
Prints ``STEP <n>`` every 5 steps (stdout, flushed) and ``DONE`` at the end; exit status 128 + signal when
interrupted (``ours``/``cli``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

STEPS = 60
BATCH = 256
EVERY = 5  # steps between checkpoints


def _pause_in_output(seconds: float) -> None:
    """Sleep in the middle of the final output save (after the SAE files are written), printing ``OUTPUT``."""
    from sae_lens.saes.sae import TrainingSAE

    save = TrainingSAE.save_inference_model

    def slow_save(self: Any, path: str) -> Any:
        out = save(self, path)
        print(f"OUTPUT {path}", flush=True)
        time.sleep(seconds)
        return out

    TrainingSAE.save_inference_model = slow_save  # type: ignore[method-assign]


def _instrument(pause_in_write: int | None) -> None:
    from sae_lens.training.activations_store import ActivationsStore
    from sae_lens.training.sae_trainer import SAETrainer

    step = SAETrainer.step

    def counted_step(self: Any, batch: Any) -> Any:
        out = step(self, batch)
        if (self.n_training_steps + 1) % 5 == 0:
            print(f"STEP {self.n_training_steps + 1}", flush=True)
        return out

    SAETrainer.step = counted_step  # type: ignore[method-assign]
    if pause_in_write is None:
        return
    save = ActivationsStore.save_to_checkpoint
    writes = [0]

    def slow_save(self: Any, checkpoint_path: Any) -> None:
        writes[0] += 1
        if writes[0] == pause_in_write:
            print(f"WRITING {checkpoint_path}", flush=True)
            time.sleep(60)
        save(self, checkpoint_path)

    ActivationsStore.save_to_checkpoint = slow_save  # type: ignore[method-assign]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["ours", "cli", "plain"])
    p.add_argument("root", type=Path)
    p.add_argument("--pause-in-write", type=int, default=None)
    p.add_argument("--resume", default=None)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--pause-in-output", type=float, default=None)
    p.add_argument("--normalize", action="store_true", help="normalize_activations='expected_average_only_in'")
    p.add_argument("--final-checkpoint", action="store_true", help="save_final_checkpoint=True")
    p.add_argument("--ortho", type=float, default=None, help="ortho_coefficient")
    args = p.parse_args()

    from tiny import tiny_dataset, tiny_model

    _instrument(args.pause_in_write)
    if args.pause_in_output is not None:
        _pause_in_output(args.pause_in_output)
    if args.mode == "cli":
        return cli_main(cli_args(args.root, args.steps, args.resume))
    cfg = runner_config(
        args.root,
        args.steps,
        args.resume,
        normalize=args.normalize,
        final_checkpoint=args.final_checkpoint,
        ortho=args.ortho,
    )
    kwargs = dict(override_model=tiny_model(), override_dataset=tiny_dataset())
    if args.mode == "plain":
        from sae_lens import LanguageModelSAETrainingRunner

        LanguageModelSAETrainingRunner(cfg, **kwargs).run()
        print("DONE", flush=True)
        return 0
    from sae_lens_ortho.training import TrainingInterrupted, train

    try:
        train(cfg, **kwargs)
    except TrainingInterrupted as e:
        print(f"INTERRUPTED {e.checkpoint}", flush=True)
        return 128 + e.signum
    print("DONE", flush=True)
    return 0


def runner_config(
    root: Path,
    steps: int = STEPS,
    resume: str | None = None,
    *,
    normalize: bool = False,
    final_checkpoint: bool = False,
    ortho: float | None = None,
) -> Any:
    """The run's config (the tests resume it in-process with the same one)."""
    from tiny import tiny_runner_config, tiny_topk_ortho_cfg

    sae: dict[str, Any] = {}
    if normalize:
        sae["normalize_activations"] = "expected_average_only_in"
    if ortho is not None:
        sae["ortho_coefficient"] = ortho
    return tiny_runner_config(
        root,
        tiny_topk_ortho_cfg(**sae),
        save_final_checkpoint=final_checkpoint,
        training_tokens=steps * BATCH,
        train_batch_size_tokens=BATCH,
        n_checkpoints=steps // EVERY - 1,
        resume_from_checkpoint=resume,
    )


def cli_main(argv: list[str]) -> int:
    """``sae-lens-ortho train ARGV`` with SAELens's model loader pointed at the tiny model (the CLI loads by name)."""
    import sae_lens.llm_sae_training_runner as runner_mod
    from tiny import tiny_model

    from sae_lens_ortho_cli import main

    model = tiny_model()  # built once (building re-seeds torch, see tests/test_crash_safe.py)
    runner_mod.load_model = lambda *a, **k: model  # type: ignore[assignment]
    # The CLI's model-name check (a folder or a TransformerLens name) would refuse the tiny model's name.
    import sae_lens_ortho.local_sources as local_sources

    local_sources.check_model_source = lambda *a, **k: None  # type: ignore[assignment]
    rc = main(argv)
    if rc == 0:
        print("DONE", flush=True)
    return rc


def cli_args(root: Path, steps: int = STEPS, resume: str | None = None, seed: int = 7) -> list[str]:
    """The CLI arguments of the run (the tiny dataset written once as parquet under ``root``)."""
    from tiny import CONTEXT, D_MODEL, HOOK, tiny_dataset

    data = root / "tokens"
    if not data.exists():
        data.mkdir(parents=True)
        tiny_dataset().to_parquet(str(data / "train.parquet"))
    argv = [
        "train",
        *("--model_name", "tiny-local", "--hook_name", HOOK, "--dataset_path", str(data)),
        *("--is_dataset_tokenized", "True", "--streaming", "False", "--context_size", str(CONTEXT)),
        *("--d_in", str(D_MODEL), "--d_sae", "256", "--k", "8", "--ortho_coefficient", "0.5"),
        *("--training_tokens", str(steps * BATCH), "--train_batch_size_tokens", str(BATCH)),
        *("--store_batch_size_prompts", "8", "--n_batches_in_buffer", "16", "--log_to_wandb", "False"),
        *("--n_checkpoints", str(steps // EVERY - 1), "--checkpoint_path", str(root / "checkpoints")),
        *("--output_path", str(root / "final"), "--verbose", "False", "--seed", str(seed)),
    ]
    if resume:
        argv += ["--resume_from_checkpoint", resume]
    return argv


if __name__ == "__main__":
    sys.exit(main())
