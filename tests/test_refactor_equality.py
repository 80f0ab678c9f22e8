"""Before/after equality of the mechanism refactor (issue 21): every preset, recipe, twin and mechanism trains
bit-identically to the weights recorded on the code before the move (``tests/refactor_reference.py`` records
them; SAELens's real trainer, fixed batches, CPU, float32, one thread)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from refactor_reference import REFERENCE, cases, train
from safetensors.torch import load_file

CASES = cases()


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, torch.Tensor]]:
    by_case: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(REFERENCE).items():
        case, name = key.split("/", 1)
        by_case.setdefault(case, {})[name] = value
    return by_case


def test_the_reference_covers_every_case_and_stays_small(reference: dict[str, Any]) -> None:
    assert set(reference) == set(CASES)
    assert REFERENCE.stat().st_size < 2 * 1024 * 1024


@pytest.mark.parametrize("case", sorted(CASES))
def test_trains_bit_identically_to_the_recorded_weights(case: str, reference: dict[str, Any]) -> None:
    make: Callable[[], Any] = CASES[case]
    got, want = train(make), reference[case]
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    different = [name for name in want if got[name].dtype != want[name].dtype or not torch.equal(got[name], want[name])]
    assert not different, f"{case}: {different} differ from the recorded weights"
