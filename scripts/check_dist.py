"""Build the wheel and the sdist with ``python -m build``, install each into a fresh virtual environment, and run a
smoke test there: import, registration, ``py.typed``, the console script, and 10 training steps offline.

Two ways to get the dependencies into the fresh environments:

* ``--deps index`` (default): a real install, as a user does it: ``pip install torch==2.13.0`` (the CPU wheel,
  local here) and then the wheel / sdist with its dependencies from the package index. Takes minutes.
* ``--deps env``: the dependencies are taken from the running environment (a ``.pth`` line to its
  site-packages) and only the built package is installed, ``--no-deps``. What the test suite runs: it checks what
  the wheel and the sdist ship (modules, ``py.typed``, entry point) in a minute or two.

The smoke test runs from a temporary working directory, so the source tree cannot stand in for the installed
package::

    .venv/bin/python scripts/check_dist.py --deps index
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"

SMOKE = textwrap.dedent(
    """
    import importlib.resources, json, os, sys, warnings
    from pathlib import Path

    warnings.simplefilter("ignore")
    import sae_lens_ortho, sae_lens_ortho_cli
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    prefix = Path(sys.prefix).resolve()
    for module in (sae_lens_ortho, sae_lens_ortho_cli):
        assert Path(module.__file__).resolve().is_relative_to(prefix), (module.__file__, prefix)
    assert importlib.resources.files("sae_lens_ortho").joinpath("py.typed").is_file(), "py.typed is not shipped"
    assert {"topk_ortho", "batchtopk_ortho", "standard_ortho"} <= set(SAE_TRAINING_CLASS_REGISTRY)

    import torch
    from datasets import Dataset
    from sae_lens import SAE, LanguageModelSAETrainingRunner
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(HookedTransformerConfig(
        n_layers=1, d_model=32, n_ctx=64, d_head=8, n_heads=4, d_mlp=64, d_vocab=200, act_fn="gelu",
        normalization_type="LN", seed=0, device="cpu"))
    tokens = torch.randint(0, 200, (64, 64), generator=torch.Generator().manual_seed(0))
    out = Path(os.getcwd())
    cfg = sae_lens_ortho.LanguageModelSAERunnerConfig(
        architecture="topk_ortho", d_in=32, d_sae=64, k=4, ortho_coefficient=0.5, ortho_pair_fraction=0.05,
        model_name="tiny", hook_name="blocks.0.hook_resid_post", dataset_path="tiny", is_dataset_tokenized=True,
        streaming=False, context_size=64, training_tokens=10 * 256, train_batch_size_tokens=256,
        n_batches_in_buffer=8, store_batch_size_prompts=4, n_batches_for_norm_estimate=2, device="cpu",
        checkpoint_path=str(out / "ckpt"), output_path=str(out / "final"), log_to_wandb=False, verbose=False,
        model_from_pretrained_kwargs={})
    sae = LanguageModelSAETrainingRunner(
        cfg, override_model=model, override_dataset=Dataset.from_dict({"tokens": tokens.tolist()})).run()
    assert int(sae.ortho_step) == 10, int(sae.ortho_step)
    final = SAE.load_from_disk(out / "final")
    assert final.cfg.architecture() == "topk" and final.cfg.metadata.training_architecture == "topk_ortho"
    print(json.dumps({"steps": int(sae.ortho_step), "version": sae_lens_ortho.__version__}))
    """
)


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def build(out: Path) -> tuple[Path, Path]:
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def fresh_env(folder: Path, deps: str) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    python = folder / "bin" / "python"
    if deps == "env":  # the running environment's packages, after the fresh one's own (its .pth files unread)
        site = Path(
            _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
        )
        (site / "_deps_from_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    else:
        _run([str(python), "-m", "pip", "install", "-q", TORCH])
    return python


def install_and_smoke(artifact: Path, folder: Path, deps: str) -> dict[str, object]:
    t0 = time.perf_counter()
    python = fresh_env(folder / "venv", deps)
    extra = ["--no-deps"] if deps == "env" else []
    _run([str(python), "-m", "pip", "install", "-q", *extra, str(artifact)])
    installed = time.perf_counter() - t0
    work = folder / "work"
    work.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "HF_HOME": str(folder / "hf"),
        "PYTHONNOUSERSITE": "1",
    }
    env.pop("PYTHONPATH", None)
    smoke = _run([str(python), "-c", SMOKE], cwd=work, env=env)
    script = folder / "venv" / "bin" / "sae-lens-ortho"
    help_out = _run([str(script), "--help"], cwd=work, env=env).stdout
    assert "commands:" in help_out and "metrics" in help_out, help_out
    return {
        "artifact": artifact.name,
        "install_s": round(installed, 1),
        "smoke_s": round(time.perf_counter() - t0 - installed, 1),
        "smoke": json.loads(smoke.stdout.strip().splitlines()[-1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--deps", choices=["index", "env"], default="index")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="check_dist_"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wheel, sdist = build(root / "dist")
    print(f"built {wheel.name} and {sdist.name} in {time.perf_counter() - t0:.1f} s")
    for kind, artifact in (("wheel", wheel), ("sdist", sdist)):
        print(json.dumps(install_and_smoke(artifact, root / kind, args.deps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
