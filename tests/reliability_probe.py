"""Fault-injection probes of issue 11, runnable against this tree or an older one (not collected by pytest).

    python tests/reliability_probe.py [numeric guard resume kill autocast guards loading seed]

Each probe tries many cases through the public API that both old and new trees have, and prints one table row:
probe, cases tried, failures. To measure the code before the fix, run it with an older tree first on the path:
``git archive a6e7a3c | tar -x -C /tmp/before && cp tests/*.py /tmp/before/tests/ && cd /tmp/before &&
PYTHONPATH=/tmp/before python tests/reliability_probe.py``. Probes that need an API the old tree lacks count
those cases as failures without running them (e.g. the memory estimate: running it on the old tree would try to
allocate ~30 GB).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def count(cases: list[Callable[[], bool]]) -> tuple[int, int]:
    """(cases, failures); a case fails when it returns False or raises."""
    failures = 0
    for case in cases:
        try:
            ok = case()
        except Exception:  # noqa: BLE001 (a probe counts every kind of failure)
            if "-v" in sys.argv:
                traceback.print_exc()
            ok = False
        failures += not ok
    return len(cases), failures


# --- 1. norms over 1e-40 ... 1e6 --------------------------------------------------------------------------------


def probe_numeric() -> tuple[int, int]:
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from sae_lens_ortho import StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig
    from sae_lens_ortho.core.grouping import grouped_decoder_penalty
    from sae_lens_ortho.core.penalties import (
        chunk_max_cos_penalty_for_perm,
        decoder_gram_penalty,
        pair_penalty,
        select_pairs_for_penalty,
    )

    scales = [10.0**e for e in range(-40, 7)]

    def selection(scale: float, method: str) -> bool:
        g = torch.Generator().manual_seed(2)
        acts = torch.rand(32, 12, generator=g) * (torch.rand(32, 12, generator=g) < 0.4)
        acts[:, 0] = (acts[:, 1] * 0.7 + 0.3 * acts[:, 2]) * scale
        x = acts.clone().requires_grad_(True)
        sel = select_pairs_for_penalty(x, 1.0, method=method, width=12)  # type: ignore[arg-type]
        pair_penalty(sel.corr, sel.valid, "squared").backward()
        normed = acts.double() / acts.double().norm(dim=0, keepdim=True)
        ref = normed.T @ normed
        i, j = sel.keys[sel.valid] // 12, sel.keys[sel.valid] % 12
        exact = bool(((sel.corr[sel.valid].double() - ref[i, j]).abs() < 2e-6).all())
        return exact and bool(((i == 0) & (j == 1)).any()) and bool(torch.isfinite(x.grad).all())  # type: ignore[arg-type]

    def decoder(scale: float, which: str) -> bool:
        W = torch.randn(10, 4, generator=torch.Generator().manual_seed(3))
        W[3] *= scale
        normed = W.double() / W.double().norm(dim=1, keepdim=True)
        cos2 = (normed @ normed.T).pow(2)
        w = W.clone().requires_grad_(True)
        if which == "gram":
            value, ref = decoder_gram_penalty(w, "sum"), (cos2.sum() - cos2.diagonal().sum()).item()
        elif which == "grouped":
            a = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1, 0, 1])
            same = a[:, None] == a[None, :]
            value, ref = grouped_decoder_penalty(w, a, 2, "sum"), ((cos2 * same).sum() - cos2.diagonal().sum()).item()
        else:
            value, ref = chunk_max_cos_penalty_for_perm(w, torch.arange(10), 2), None
        value.backward()
        ok = bool(torch.isfinite(w.grad).all())  # type: ignore[arg-type]
        return ok and (ref is None or math.isclose(value.item(), ref, rel_tol=1e-5))

    def end_to_end(bias: float) -> bool:
        x = torch.randn(64, 16, generator=torch.Generator().manual_seed(4))
        torch.manual_seed(0)
        sae = StandardOrthoTrainingSAE(StandardOrthoTrainingSAEConfig(d_in=16, d_sae=32, ortho_pair_fraction=0.5))
        with torch.no_grad():
            sae.W_enc[:, 0] = 0.0
            sae.b_enc[0] = bias
        cfg = SAETrainerConfig(total_training_samples=10**6, train_batch_size_samples=64, lr=1e-3, lr_end=1e-3)
        trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=iter(()))
        trainer.step(x)
        return all(bool(torch.isfinite(p).all()) for p in sae.parameters())

    cases: list[Callable[[], bool]] = []
    for s in scales:
        cases += [lambda s=s, m=m: selection(s, m) for m in ("sparse", "dense")]
        cases += [lambda s=s, w=w: decoder(s, w) for w in ("gram", "grouped", "chunk_max")]
    cases += [lambda b=10.0**-e: end_to_end(b) for e in range(13, 41)]
    return count(cases)


# --- 2. non-finite batches -------------------------------------------------------------------------------------


def probe_guard() -> tuple[int, int]:
    from trainer_harness import BATCH, D_IN, D_SAE, STATEFUL, batches, fit_batches, poisoned, trainer_config

    def case(sae_cls: Any, cfg_cls: Any, kw: dict[str, Any], bad: float) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            sae = sae_cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, **kw))
            data = poisoned(batches(10, BATCH, D_IN), step=6, value=bad)
            named = False
            try:
                fit_batches(sae, data, trainer_config(BATCH, 10, Path(tmp) / "ckpt", n_checkpoints=2))
            except Exception as e:  # noqa: BLE001
                named = "step 6" in str(e)
            finite = all(
                bool(torch.isfinite(t).all()) for t in [*sae.parameters(), *sae.buffers()] if t.is_floating_point()
            )
            later = (Path(tmp) / "ckpt" / str(7 * BATCH) / "sae_weights.safetensors").exists()
            return named and finite and not later

    return count([lambda c=c, b=b: case(*c, b) for c in STATEFUL for b in (float("nan"), float("inf"))])


# --- 3. trainer-level resume -----------------------------------------------------------------------------------


def probe_resume() -> tuple[int, int]:
    from test_resume_exact import cases, run_and_resume
    from trainer_harness import first_difference

    def case(arch: str, mech: str) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            full, resumed, _ = run_and_resume(arch, mech, Path(tmp))
            return first_difference(full, resumed) is None

    return count([lambda a=a, m=m: case(a, m) for a, m in cases()])


# --- 4. kills of a real training process -----------------------------------------------------------------------


def _checkpoints(root: Path) -> list[Path]:
    return [p for p in (root / "checkpoints").glob("*/*") if p.is_dir()]


def _complete(path: Path) -> bool:
    files = (
        "cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
        "trainer_state.pt",
        "activation_scaler.json",
        "activations_store_state.safetensors",
        "runner_cfg.json",
    )
    return all((path / f).is_file() for f in files)


def probe_kill() -> tuple[int, int]:
    mode = "ours" if has("sae_lens_ortho.training") else "plain"

    def run(sig: signal.Signals) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            args = [sys.executable, str(HERE / "crash_child.py"), mode, str(root)]
            if sig == signal.SIGKILL:
                args += ["--pause-in-write", "3"]
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert proc.stdout is not None
            before: list[Path] = []
            for line in proc.stdout:
                if sig == signal.SIGKILL and line.startswith("WRITING"):
                    break
                if sig != signal.SIGKILL and line.startswith("STEP") and int(line.split()[1]) >= 10:
                    before = [p for p in _checkpoints(root) if _complete(p)]
                    if before:
                        break
            proc.send_signal(sig)
            proc.wait(300)
            visible = [p for p in _checkpoints(root) if not p.name.startswith(".")]
            if sig == signal.SIGKILL:  # every checkpoint a resume could pick must be complete
                return bool(visible) and all(_complete(p) for p in visible)
            newest = max(visible, key=lambda p: int(p.name.split("_")[-1]))
            return _complete(newest) and newest not in before  # an interrupt checkpoint, complete

    return count([lambda s=s: run(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL) for _ in range(2)])


# --- 5. autocast -----------------------------------------------------------------------------------------------


def probe_autocast() -> tuple[int, int]:
    from test_autocast import _acts, _orthogonal

    from sae_lens_ortho.core.diagnostics import mean_pair_cosine
    from sae_lens_ortho.core.grouping import grouped_decoder_penalty
    from sae_lens_ortho.core.penalties import (
        chunk_max_cos_penalty_for_perm,
        decoder_gram_penalty,
        select_pairs_for_penalty,
    )

    def same(fn: Callable[[], Any], dtype: torch.dtype) -> bool:
        plain = fn()
        with torch.autocast("cpu", dtype=dtype):
            auto = fn()
        plain, auto = (plain if isinstance(plain, tuple) else (plain,)), (auto if isinstance(auto, tuple) else (auto,))
        ok = all(a.shape == b.shape and torch.equal(a.float(), b.float()) for a, b in zip(plain, auto))
        return ok and all(not v.is_floating_point() or bool((v >= 0).all()) for v in auto if v.ndim == 0)

    W_orth = _orthogonal(256, 512, 0)  # inputs are made outside autocast (_acts has a matmul)
    W_near = W_orth + 1e-3 * torch.randn(256, 512, generator=torch.Generator().manual_seed(1))
    acts, acts2 = _acts(0), _acts(2)
    cases: list[Callable[[], bool]] = []
    for dtype in (torch.bfloat16, torch.float16):
        for method in ("sparse", "dense"):
            cases.append(
                lambda d=dtype, m=method: same(
                    lambda: (lambda s: (s.keys, s.valid, s.corr.detach()))(
                        select_pairs_for_penalty(acts, 0.05, method=m, width=6)
                    ),
                    d,
                )
            )
        for W in (W_orth, W_near):
            cases.append(lambda d=dtype, W=W: same(lambda: decoder_gram_penalty(W, "mean"), d))
            cases.append(lambda d=dtype, W=W: same(lambda: chunk_max_cos_penalty_for_perm(W, torch.arange(256), 4), d))
        for seed in range(10):
            W = torch.randn(24, 32, generator=torch.Generator().manual_seed(seed))
            cases.append(lambda d=dtype, W=W: same(lambda: grouped_decoder_penalty(W, torch.arange(24), 24, "sum"), d))
        cases.append(lambda d=dtype: same(lambda: mean_pair_cosine(acts2), d))
    return count(cases)


# --- 6. resource guards ----------------------------------------------------------------------------------------


def probe_guards() -> tuple[int, int]:
    import numpy as np
    from sae_lens.saes.sae import TrainStepInput

    from sae_lens_ortho import (
        BatchTopKOrthoTrainingSAEConfig,
        StandardOrthoTrainingSAE,
        StandardOrthoTrainingSAEConfig,
        TopKOrthoTrainingSAE,
        TopKOrthoTrainingSAEConfig,
    )

    def accepts(**kw: Any) -> bool:
        cfg = TopKOrthoTrainingSAEConfig(d_in=8, d_sae=32, k=4, **kw)
        import json

        json.dumps(cfg.to_dict())
        return True

    def refuses(make: Callable[[], Any], *words: str) -> bool:
        try:
            make()
        except ValueError as e:
            return all(w in str(e) for w in words)
        return False

    def auto_at_70k() -> bool:
        sae = TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(d_in=4, d_sae=70_000, k=1_100, ortho_pair_fraction=1e-6))
        sae.training_forward_pass(
            TrainStepInput(torch.randn(2, 4), {"ortho": 1.0, "decoder_ortho": 0.0}, None, 0, False)
        )
        return True

    def micro_warns() -> bool:
        sae = StandardOrthoTrainingSAE(StandardOrthoTrainingSAEConfig(d_in=8, d_sae=32, ortho_micro_batch_size=64))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            sae.training_forward_pass(
                TrainStepInput(torch.randn(16, 8), {"ortho": 1.0, "decoder_ortho": 0.0, "l1": 1.0}, None, 0, False)
            )
        return any("ortho_micro_batch_size" in str(w.message) for w in seen)

    def memory_estimate() -> bool:
        if not has("sae_lens_ortho.saes.resources"):
            return False  # no estimate: the old tree would allocate ~30 GB and die in the allocator
        import sae_lens_ortho.saes.resources as resources

        resources.available_bytes = lambda device: 16 * 2**30  # type: ignore[assignment]
        cfg = TopKOrthoTrainingSAEConfig(d_in=8, d_sae=65_536, k=512, ortho_method="sparse")
        try:
            resources.selection_plan(cfg, 2048, "cpu")
        except MemoryError as e:
            return "GiB" in str(e) and "train_batch_size_tokens" in str(e)
        return False

    cases: list[Callable[[], bool]] = [
        lambda: accepts(ortho_coefficient=np.float32(0.5)),
        lambda: accepts(ortho_warm_up_steps=np.int64(10)),
        lambda: accepts(ortho_pair_fraction=np.float64(0.01), ortho_tau=np.float16(0.25)),
        lambda: accepts(ortho_unit_norm_decoder=np.bool_(True)),
        lambda: refuses(lambda: TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=17), "k", "d_sae"),
        lambda: refuses(lambda: BatchTopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=17), "k", "d_sae"),
        lambda: refuses(
            lambda: StandardOrthoTrainingSAEConfig(d_in=4, d_sae=70_000, ortho_method="dense"), "ortho_method", "d_sae"
        ),
        auto_at_70k,
        micro_warns,
        memory_estimate,
    ]
    return count(cases)


# --- 7. loading errors -----------------------------------------------------------------------------------------


def probe_loading() -> tuple[int, int]:
    from sae_lens import SAE
    from sae_lens.saes.sae import TrainStepInput

    import sae_lens_ortho as so

    def trained(sae: Any) -> Any:
        coefficients = {"ortho": 1.0, "decoder_ortho": 0.0, "l1": 1.0, "l0": 1.0}
        sae.training_forward_pass(TrainStepInput(torch.randn(4, 8), coefficients, None, 0, False))
        return sae

    def clear_error(make: Callable[[], Any]) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            trained(make()).save_model(tmp)
            try:
                SAE.load_from_disk(tmp)
            except KeyError:
                return False
            except ValueError as e:
                return "TrainingSAE.load_from_disk" in str(e)
            return False

    def hint() -> bool:
        import json

        with tempfile.TemporaryDirectory() as tmp:
            cfg = so.StandardOrthoTrainingSAEConfig(d_in=8, d_sae=16, ortho_encoder_layer_norm=True)
            trained(so.StandardOrthoTrainingSAE(cfg)).save_inference_model(tmp)
            saved = json.loads((Path(tmp) / "cfg.json").read_text())
            return "sae-lens-ortho" in json.dumps(saved["metadata"])

    def card() -> bool:
        import json

        from sae_lens_ortho.hub import model_card

        with tempfile.TemporaryDirectory() as tmp:
            cfg = so.StandardOrthoTrainingSAEConfig(d_in=8, d_sae=16, ortho_encoder_layer_norm=True)
            trained(so.StandardOrthoTrainingSAE(cfg)).save_inference_model(tmp)
            return "import sae_lens_ortho" in model_card(json.loads((Path(tmp) / "cfg.json").read_text()))

    jumprelu_sae, jumprelu_cfg = so.add_ortho("jumprelu")
    cases: list[Callable[[], bool]] = [
        lambda: clear_error(lambda: so.TopKOrthoTrainingSAE(so.TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2))),
        lambda: clear_error(
            lambda: so.BatchTopKOrthoTrainingSAE(so.BatchTopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2))
        ),
        lambda: clear_error(lambda: so.StandardOrthoTrainingSAE(so.StandardOrthoTrainingSAEConfig(d_in=8, d_sae=16))),
        lambda: clear_error(lambda: jumprelu_sae(jumprelu_cfg(d_in=8, d_sae=16))),
        hint,
        card,
    ]
    return count(cases)


# --- 8. seeded CLI runs ----------------------------------------------------------------------------------------


def probe_seed() -> tuple[int, int]:
    import sae_lens.llm_sae_training_runner as runner_mod
    from crash_child import cli_args
    from safetensors.torch import load_file
    from tiny import tiny_model

    from sae_lens_ortho_cli import main

    model = tiny_model()  # once: building a seeded HookedTransformer re-seeds torch, which would hide the bug
    runner_mod.load_model = lambda *a, **k: model  # type: ignore[assignment]

    def twice() -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            finals = []
            for name in ("a", "b"):
                torch.randn(7)  # the session's RNG moves on between runs
                assert main(cli_args(Path(tmp) / name, steps=20)) == 0
                finals.append(load_file(Path(tmp) / name / "final" / "sae_weights.safetensors"))
            diff = max(float((finals[0][k] - finals[1][k]).abs().max()) for k in finals[0])
            print(f"  seed: max |difference| between the two runs {diff:.3g}", file=sys.stderr)
            return diff == 0

    return count([twice])


# --- memory estimate against a measurement ---------------------------------------------------------------------


def probe_footprint() -> tuple[int, int]:
    """Peak memory of one selection forward + backward (CPU resident set, ``bench.peak_memory``) against
    ``core.footprint``'s estimate; a case fails when the estimate is below the measurement or above 2.5x it
    (the estimate is meant to be on the high side; resident-set readings vary by up to a third)."""
    from sae_lens_ortho.bench import peak_memory
    from sae_lens_ortho.core.footprint import dense_selection_bytes, sparse_selection_bytes
    from sae_lens_ortho.core.penalties import n_ranked_pairs, pair_penalty, select_pairs_for_penalty

    def case(b: int, n: int, k: int, p: float, method: str) -> bool:
        g = torch.Generator().manual_seed(0)
        vals, idx = torch.randn(b, n, generator=g).topk(k, dim=1)
        vals = vals.relu().requires_grad_(True)
        acts = torch.zeros(b, n).scatter(1, idx, vals.detach()).requires_grad_(True)

        def step() -> None:
            captured = (vals, idx) if method == "sparse" else None
            sel = select_pairs_for_penalty(acts, p, width=k, method=method, sparse=captured)  # type: ignore[arg-type]
            pair_penalty(sel.corr, sel.valid).backward()

        step()
        measured = peak_memory(step, "cpu")
        m = n_ranked_pairs(n, p)
        est = sparse_selection_bytes(b, k, m) if method == "sparse" else dense_selection_bytes(b, n, m, 512)
        print(
            f"  footprint {method} b={b} n={n} k={k} p={p}: measured {measured / 2**20:.0f} MiB, "
            f"estimate {est.bytes / 2**20:.0f} MiB",
            file=sys.stderr,
        )
        return measured <= est.bytes <= 2.5 * measured

    grid = [
        (1024, 4096, 64, 0.001, "sparse"),
        (2048, 16384, 32, 0.001, "sparse"),
        (4096, 4096, 64, 1.0, "sparse"),
        (1024, 4096, 64, 0.001, "dense"),
        (2048, 8192, 64, 0.01, "dense"),
    ]
    return count([lambda c=c: case(*c) for c in grid])


PROBES = {
    "numeric": ("1. norms 1e-40..1e6 (values, gradients, one SAELens step)", probe_numeric),
    "guard": ("2. NaN/inf batch: weights and state finite, stop naming the step", probe_guard),
    "resume": ("3. trainer-level resume bit-exact (3 architectures x mechanisms)", probe_resume),
    "kill": ("4. SIGTERM/SIGINT/SIGKILL to a real training process", probe_kill),
    "autocast": ("5. bf16/fp16 autocast equals float32", probe_autocast),
    "guards": ("6. NumPy scalars, k > d_sae, dense > 65,536, micro-batch, memory", probe_guards),
    "loading": ("7. clear loading errors and the package hint", probe_loading),
    "seed": ("8. two seeded CLI runs bit-identical", probe_seed),
    "footprint": ("6b. selection memory estimate within [1x, 2.5x] of the measured peak", probe_footprint),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("probes", nargs="*", default=list(PROBES), choices=[*PROBES, []])
    p.add_argument("-v", action="store_true", help="print the traceback of every failing case")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    import sae_lens_ortho

    print(f"tree: {Path(sae_lens_ortho.__file__).parent.parent}")
    print("| probe | cases | failures |\n|---|---:|---:|")
    for name in args.probes:
        title, fn = PROBES[name]
        start = time.monotonic()
        tried, failed = fn()
        print(f"| {title} | {tried} | {failed} |", flush=True)
        print(f"  ({name}: {time.monotonic() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
