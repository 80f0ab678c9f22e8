"""``core.memory.peak_allocated_bytes`` against known answers: calls whose peak is a known number of bytes."""

import torch

from sae_lens_ortho.core.memory import peak_allocated_bytes

F32 = 4  # bytes per float32


def _staircase() -> None:
    a = torch.empty(1000)  # 4,000 held
    b = torch.empty(2000)  # 12,000
    del a  # 8,000
    c = torch.empty(3000)  # 20,000: the peak
    del b, c


def test_peak_of_a_known_allocation_pattern_is_exact() -> None:
    assert peak_allocated_bytes(_staircase, "cpu") == (20_000, None)


def test_real_ops_and_their_temporaries_are_counted() -> None:
    n = 1 << 16
    x = torch.randn(n)

    def call() -> torch.Tensor:
        y = x * x  # 4n bytes (tensor operands only: a Python scalar would become a small tensor too)
        return y + x  # another 4n while y is alive: peak 8n

    peak, out = peak_allocated_bytes(call, "cpu")
    assert peak == 2 * n * F32
    assert torch.equal(out, x * x + x)


def test_freeing_a_block_from_before_the_call_does_not_lower_the_count() -> None:
    held = [torch.empty(10_000)]  # allocated before any recording

    def call() -> None:
        held.clear()  # frees 40,000 bytes the recording never saw allocated
        t = torch.empty(2000)
        del t

    assert peak_allocated_bytes(call, "cpu")[0] == 8000


def test_warm_calls_make_the_previous_calls_leftovers_known() -> None:
    state: dict[str, torch.Tensor] = {"out": torch.empty(2000)}

    def step() -> None:  # like a training step: frees the previous output, a temporary, a new output
        del state["out"]  # -8,000
        tmp = torch.empty(1000)  # +4,000
        state["out"] = torch.empty(2000)  # +8,000
        del tmp

    # Cold: the freed output was allocated before recording, so its free is not seen: 4,000 + 8,000.
    assert peak_allocated_bytes(step, "cpu")[0] == 12_000
    # Steady state: the output of the warm call is freed inside the measured one: 8,000 - 8,000 + 12,000.
    assert peak_allocated_bytes(step, "cpu", warm_calls=1)[0] == 4000


def test_the_figure_does_not_depend_on_what_ran_before() -> None:
    """Earlier recordings, untracked allocations and frees in between (which leave stale sizes in torch's own
    table of tracked blocks) change nothing."""
    keep = []
    results = []
    for i in range(5):
        peak, out = peak_allocated_bytes(lambda: torch.empty(5000 + i), "cpu")  # noqa: B023
        keep.append(out)  # alive after its recording ended
        keep.pop(0) if len(keep) > 1 else None  # freed while nothing records
        noise = [torch.empty(5000 + j) for j in range(i + 1)]  # reuse those addresses untracked
        results.append((peak, peak_allocated_bytes(_staircase, "cpu")[0]))
        del noise
    assert results == [((5000 + i) * F32, 20_000) for i in range(5)]


def test_a_call_that_allocates_nothing_has_peak_zero() -> None:
    assert peak_allocated_bytes(lambda: 1 + 1, "cpu") == (0, 2)


def test_a_sae_lens_training_step_measures_the_same_on_every_run() -> None:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=16, d_sae=64, k=4))
    tr = SAETrainer(
        cfg=SAETrainerConfig(total_training_samples=10**6, train_batch_size_samples=32, lr_end=3e-5),
        sae=sae,
        data_provider=iter(()),
    )
    x = torch.randn(32, 16)
    peaks = [peak_allocated_bytes(lambda: tr.step(x), "cpu", warm_calls=1)[0] for _ in range(3)]
    # at least the [32, 64] hidden pre-activations and latent activations (float32)
    assert peaks[0] >= 2 * 32 * 64 * F32
    assert peaks == [peaks[0]] * 3
