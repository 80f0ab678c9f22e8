"""What a real ``topk_ortho`` run logs to wandb (offline), read back with ``sae_lens_ortho.wandb_offline``.

The module fixture trains 30 steps with ``wandb_log_frequency=3`` in wandb offline mode, recording each
step's real ``TrainStepOutput`` on the way; the tests then read the run's ``.wandb`` file. Further tests
check the reader's framing against the same file and against synthetic logs.
"""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import wandb
from sae_lens import LanguageModelSAETrainingRunner, LoggingConfig
from tiny import tiny_dataset, tiny_model, tiny_runner_config, tiny_topk_ortho_cfg

from sae_lens_ortho.core.pairs import n_selected_pairs
from sae_lens_ortho.wandb_offline import (
    WandbLogError,
    find_run_files,
    iter_record_bytes,
    read_history,
    read_records,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:The training dataset contains fewer samples"),
    pytest.mark.filterwarnings("ignore:To copy construct from a tensor"),
]

STEPS = 30
LOG_EVERY = 3
WARM_UP = 9
ORTHO_COEF = 0.1
DECODER_COEF = 0.01
D_SAE = 256
PAIR_FRACTION = 0.01
LOGGING_STEPS = {s for s in range(STEPS) if (s + 1) % LOG_EVERY == 0}  # SAELens: (n + 1) % freq == 0

ORTHO_METRICS = [
    "ortho_selected_pairs",
    "ortho_selected_corr_max",
    "ortho_selected_corr_mean",
    "ortho_penalty",
    "ortho_mean_pair_cosine",
    "ortho_cofire_fraction",
    "ortho_pair_jaccard",
    "ortho_decoder_penalty",
    "ortho_selected_decoder_cos_mean",
    "ortho_loss_scale",
    "ortho_peak_memory_mib",
    "ortho_memory_mib",
]
LOGGED_KEYS = [
    "losses/ortho_loss",
    "losses/decoder_ortho_loss",
    "details/ortho_coefficient",
    "details/decoder_ortho_coefficient",
    *[f"metrics/{m}" for m in ORTHO_METRICS],
]


@dataclass
class StepSeen:
    step: int
    is_logging_step: bool
    metrics: dict[str, float]
    losses: dict[str, float]


@dataclass
class WandbRun:
    wandb_dir: Path
    run_file: Path
    steps: list[StepSeen]
    history: list[dict[str, Any]]


def _as_float(value: Any) -> float:
    value = value() if callable(value) else value
    return float(value.item() if hasattr(value, "item") else value)


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory: pytest.TempPathFactory) -> WandbRun:
    tmp = tmp_path_factory.mktemp("wandb_run")
    root = tmp / "wandb_root"
    root.mkdir()
    sae_cfg = tiny_topk_ortho_cfg(
        ortho_coefficient=ORTHO_COEF,
        ortho_decoder_coefficient=DECODER_COEF,
        ortho_pair_fraction=PAIR_FRACTION,
        ortho_warm_up_steps=WARM_UP,
    )
    cfg = tiny_runner_config(
        tmp,
        sae_cfg,
        training_tokens=STEPS * 1024,
        logger=LoggingConfig(
            log_to_wandb=True,
            wandb_project="sae_lens_ortho_tests",
            wandb_log_frequency=LOG_EVERY,
            eval_every_n_wandb_logs=10_000,  # no eval pass (it would run the LM many times)
        ),
    )
    steps: list[StepSeen] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_DIR", str(root))
        mp.setenv("WANDB_MODE", "offline")
        runner = LanguageModelSAETrainingRunner(cfg, override_model=tiny_model(), override_dataset=tiny_dataset())
        forward = runner.sae.training_forward_pass

        def recording_forward(step_input: Any) -> Any:
            out = forward(step_input)
            steps.append(
                StepSeen(
                    step=step_input.n_training_steps,
                    is_logging_step=step_input.is_logging_step,
                    metrics={k: _as_float(v) for k, v in out.metrics.items()},
                    losses={k: _as_float(v) for k, v in out.losses.items()},
                )
            )
            return out

        runner.sae.training_forward_pass = recording_forward  # type: ignore[method-assign]
        try:
            runner.run()
        finally:
            if wandb.run is not None:
                wandb.finish()
    files = find_run_files(root / "wandb")
    assert len(files) == 1, files
    assert files[0].parent.name.startswith("offline-run-")
    _wait_for_exit_record(files[0])
    return WandbRun(wandb_dir=root / "wandb", run_file=files[0], steps=steps, history=read_history(files[0]))


def _wait_for_exit_record(run_file: Path, timeout_s: float = 60.0) -> None:
    """Block until wandb's service has written the run's ``exit`` record, its last: the file is written by another
    process, and the reader stops quietly at a truncated final chunk. (Twelve runs under load had the record at
    the first look; whether a late flush is the rare full-suite failure of docs/notes.md is not established.)"""
    deadline = time.monotonic() + timeout_s
    while not any(r.WhichOneof("record_type") == "exit" for r in read_records(run_file)):
        if time.monotonic() > deadline:
            pytest.fail(f"{run_file}: no exit record {timeout_s:.0f} s after wandb.finish()")
        time.sleep(0.2)


def _ortho_rows(run: WandbRun) -> dict[int, dict[str, Any]]:
    return {row["_step"]: row for row in run.history if "metrics/ortho_selected_pairs" in row}


def test_all_steps_ran(wandb_run: WandbRun) -> None:
    assert [s.step for s in wandb_run.steps] == list(range(STEPS))


def test_ortho_metrics_logged_with_finite_values(wandb_run: WandbRun) -> None:
    rows = _ortho_rows(wandb_run)
    assert set(rows) == LOGGING_STEPS
    max_pairs = n_selected_pairs(D_SAE, PAIR_FRACTION)
    for step, row in rows.items():
        for key in LOGGED_KEYS:
            assert key in row, (step, key)
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]), (step, key, row[key])
        assert 1 <= row["metrics/ortho_selected_pairs"] <= max_pairs
        assert float(row["metrics/ortho_selected_pairs"]).is_integer()
        assert 0 < row["metrics/ortho_selected_corr_mean"] <= row["metrics/ortho_selected_corr_max"] <= 1 + 1e-6
        assert 0 <= row["metrics/ortho_mean_pair_cosine"] <= 1
        assert 0 < row["metrics/ortho_cofire_fraction"] <= 1
        assert 0 <= row["metrics/ortho_pair_jaccard"] <= 1
        assert row["metrics/ortho_decoder_penalty"] > 0
        assert 7.5 < row["metrics/l0"] <= 8  # TopK k=8


def test_logged_values_are_the_step_outputs(wandb_run: WandbRun) -> None:
    """What the file holds is exactly what the SAE returned on that step (float64 round trip)."""
    rows = _ortho_rows(wandb_run)
    by_step = {s.step: s for s in wandb_run.steps}
    for step, row in rows.items():
        seen = by_step[step]
        for name, value in seen.metrics.items():
            assert row[f"metrics/{name}"] == pytest.approx(value, rel=1e-12, abs=0), name
        for name, value in seen.losses.items():
            assert row[f"losses/{name}"] == pytest.approx(value, rel=1e-12, abs=0), name


def test_losses_follow_coefficients_and_warm_up(wandb_run: WandbRun) -> None:
    for step, row in _ortho_rows(wandb_run).items():
        used = ORTHO_COEF * min(step, WARM_UP) / WARM_UP  # the scheduler value during step `step`
        scale = row["metrics/ortho_loss_scale"]  # E||x||^2 of the batch: the default ortho_scale="input_energy"
        assert scale > 0
        assert row["losses/ortho_loss"] == pytest.approx(
            used * scale * row["metrics/ortho_penalty"], rel=1e-5, abs=1e-9
        )
        # SAELens logs the coefficients after stepping the schedulers: the value for the next step.
        assert row["details/ortho_coefficient"] == pytest.approx(ORTHO_COEF * min(step + 1, WARM_UP) / WARM_UP)
        assert row["details/decoder_ortho_coefficient"] == pytest.approx(DECODER_COEF)
        assert row["losses/decoder_ortho_loss"] == pytest.approx(
            DECODER_COEF * scale * row["metrics/ortho_decoder_penalty"], rel=1e-5
        )
    assert _ortho_rows(wandb_run)[max(LOGGING_STEPS)]["details/ortho_coefficient"] == pytest.approx(ORTHO_COEF)


def test_diagnostics_only_on_logging_steps(wandb_run: WandbRun) -> None:
    computed = {s.step for s in wandb_run.steps if any(k.startswith("ortho_") for k in s.metrics)}
    flagged = {s.step for s in wandb_run.steps if s.is_logging_step}
    assert flagged == LOGGING_STEPS
    assert computed == LOGGING_STEPS
    for s in wandb_run.steps:
        assert sorted(s.metrics) == (sorted(ORTHO_METRICS) if s.is_logging_step else []), s.step
        assert {"ortho_loss", "decoder_ortho_loss"} <= set(s.losses)
    # Every training-step history row carries the diagnostics; no other row does.
    train_rows = {row["_step"] for row in wandb_run.history if "losses/overall_loss" in row}
    assert train_rows == LOGGING_STEPS == set(_ortho_rows(wandb_run))


def test_peak_memory_is_logged_as_process_rss(wandb_run: WandbRun) -> None:
    """On CPU the metric is the process's resident set (seed 000 logs peak memory)."""
    rows = [r for r in wandb_run.history if "metrics/ortho_peak_memory_mib" in r]
    assert len(rows) == len(LOGGING_STEPS)
    for row in rows:
        # A process with torch imported holds well over 100 MiB; the peak bounds the current resident set.
        assert 100 < row["metrics/ortho_memory_mib"] <= row["metrics/ortho_peak_memory_mib"]


def test_run_config_records_the_ortho_fields(wandb_run: WandbRun) -> None:
    records = read_records(wandb_run.wandb_dir)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds[0] == "header" and "run" in kinds and "exit" in kinds
    run = records[kinds.index("run")].run
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["sae"]["architecture"] == "topk_ortho"
    assert config["sae"]["ortho_coefficient"] == ORTHO_COEF
    assert config["sae"]["ortho_warm_up_steps"] == WARM_UP
    # SAELens logs the saved SAE as an artifact; offline, that is a record in the file, not an upload.
    assert "artifact" in kinds


# --- the reader's framing -------------------------------------------------------------------------------


def _encode_log(payloads: list[bytes]) -> bytes:
    """A wandb transaction log holding ``payloads``, laid out as wandb-core's LevelDB-style writer does."""
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for payload in payloads:
        first = True
        while True:
            left = 32768 - len(out) % 32768
            if left < 7:
                out += bytes(left)
                continue
            chunk, payload = payload[: left - 7], payload[left - 7 :]
            last = not payload
            kind = (1 if last else 2) if first else (4 if last else 3)
            crc = zlib.crc32(chunk, zlib.crc32(bytes([kind])))
            out += struct.pack("<IHB", crc, len(chunk), kind) + chunk
            first = False
            if last:
                break
    return bytes(out)


def test_reader_framing_matches_the_real_file(wandb_run: WandbRun) -> None:
    data = wandb_run.run_file.read_bytes()
    assert len(data) > 32768  # the run spans more than one block
    payloads = list(iter_record_bytes(wandb_run.run_file))
    assert _encode_log(payloads) == data  # same bytes back: header, chunks, CRCs and padding all understood


def test_reader_reassembles_records_across_blocks(tmp_path: Path) -> None:
    payloads = [
        b"a" * (32768 - 7 - 7 - 3),  # leaves 3 bytes in block 0: too few for a chunk header, zero-padded
        b"",  # an empty record (a FULL chunk of length 0)
        bytes(range(256)) * 300,  # 76.8 kB: FIRST, MIDDLE, LAST chunks over three blocks
    ]
    filled = len(_encode_log(payloads)) % 32768
    payloads.append(b"b" * (32768 - filled - 7))  # ends exactly at a block boundary
    payloads.append(b"c" * 5)
    data = _encode_log(payloads)
    assert data[32765:32768] == bytes(3)
    assert len(_encode_log(payloads[:-1])) % 32768 == 0
    path = tmp_path / "run-synthetic.wandb"
    path.write_bytes(data)
    assert list(iter_record_bytes(path)) == payloads
    # A record cut off by the end of the file (a run still being written) is dropped.
    path.write_bytes(data[:-3])
    assert list(iter_record_bytes(path)) == payloads[:-1]


def test_reader_rejects_corruption(tmp_path: Path) -> None:
    good = bytearray(_encode_log([b"hello", b"world" * 100]))
    path = tmp_path / "run-x.wandb"
    bad = bytearray(good)
    bad[7 + 7 + 2] ^= 0xFF  # a payload byte of the first record
    path.write_bytes(bytes(bad))
    with pytest.raises(WandbLogError, match="checksum"):
        list(iter_record_bytes(path))
    assert len(list(iter_record_bytes(path, verify_crc=False))) == 2
    path.write_bytes(b"NOTW" + bytes(good[4:]))
    with pytest.raises(WandbLogError, match="not a wandb"):
        list(iter_record_bytes(path))
    with pytest.raises(FileNotFoundError):
        read_history(tmp_path / "nothing-here")
