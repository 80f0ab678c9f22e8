"""Device-specific fast paths against torch's own ops (the CUDA path is torch's op itself), on every CPU backend."""

import pytest
import torch

from sae_lens_ortho.core import kernels
from sae_lens_ortho.core.kernels import cpu_sort_backend, reverse_arange, sort_int64


@pytest.fixture(params=["numpy", "torch"])
def backend(request, monkeypatch):
    monkeypatch.setattr(kernels, "CPU_BACKEND", request.param)
    return request.param


def _keys(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Full int64 range, with repeated values and the extremes the packed keys can reach.
    return torch.cat([torch.randint(-(2**62), 2**62, (n,), generator=g), torch.tensor([5, 5, 5, -1, 0, 2**63 - 1])])


def test_sort_equals_torch_sort_on_packed_keys(backend):
    x = _keys(100_000)
    assert cpu_sort_backend() == backend
    out = sort_int64(x)
    assert torch.equal(out, x.sort().values) and out.dtype == torch.int64


def test_non_1d_or_non_int64_inputs_take_torch_sort(backend):
    x = torch.randint(0, 100, (4, 5))
    assert torch.equal(sort_int64(x), x.sort().values)
    y = torch.rand(50)
    assert torch.equal(sort_int64(y), y.sort().values)


def test_a_strided_view_sorts_like_its_copy(backend):
    x = _keys(10_000, seed=2)[::3]
    assert torch.equal(sort_int64(x), x.contiguous().sort().values)


def test_auto_measures_once_and_picks_a_backend(monkeypatch):
    monkeypatch.setattr(kernels, "CPU_BACKEND", "auto")
    kernels._measured_sort.cache_clear()
    calls = []
    for name, sort in list(kernels._SORTS.items()):  # count the calibration's calls without changing them
        monkeypatch.setitem(kernels._SORTS, name, lambda x, sort=sort, name=name: calls.append(name) or sort(x))
    first = cpu_sort_backend()
    assert first in ("numpy", "torch") and calls.count("numpy") == calls.count("torch") == 3
    assert cpu_sort_backend() == first and len(calls) == 6  # cached: measured once per process
    kernels._measured_sort.cache_clear()


def test_unknown_backend_setting_is_an_error(monkeypatch):
    monkeypatch.setattr(kernels, "CPU_BACKEND", "fortran")
    with pytest.raises(ValueError, match="SAE_LENS_ORTHO_CPU_KERNELS must be auto, numpy or torch"):
        cpu_sort_backend()


def test_reverse_arange_is_cached_and_exact():
    a = reverse_arange(10, "cpu")
    assert a is reverse_arange(10, "cpu")
    assert a.tolist() == [(1 << 32) - 1 - i for i in range(10)]
