"""Device-specific fast paths against torch's own ops (the CUDA path is torch's op itself), on every CPU backend."""

import pytest
import torch

from sae_lens_ortho import kernels
from sae_lens_ortho.kernels import cpu_backend, largest_int64, reverse_arange, sort_int64


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
    assert cpu_backend("sort") == backend
    out = sort_int64(x)
    assert torch.equal(out, x.sort().values) and out.dtype == torch.int64


@pytest.mark.parametrize("m", [0, 1, 7, 1000, 100_006])
def test_largest_equals_topk_values_including_ties(backend, m):
    x = _keys(100_000, seed=1)
    out = largest_int64(x, m)
    assert torch.equal(out, x.topk(m, sorted=True).values)
    assert out.dtype == torch.int64 and out.is_contiguous()


def test_largest_of_a_strided_view(backend):
    x = _keys(10_000, seed=2)[::3]
    assert torch.equal(largest_int64(x, 50), x.topk(50).values)


def test_largest_rejects_m_out_of_range():
    with pytest.raises(ValueError, match=r"m must be in \[0, 3\]"):
        largest_int64(torch.arange(3), 4)


def test_non_1d_or_non_int64_inputs_take_torch_sort(backend):
    x = torch.randint(0, 100, (4, 5))
    assert torch.equal(sort_int64(x), x.sort().values)
    y = torch.rand(50)
    assert torch.equal(sort_int64(y), y.sort().values)
    assert torch.equal(largest_int64(y, 5), y.topk(5).values)


def test_auto_measures_once_and_picks_a_backend(monkeypatch):
    monkeypatch.setattr(kernels, "CPU_BACKEND", "auto")
    kernels._measured_backend.cache_clear()
    calls = []
    for name in ("numpy", "torch"):  # count the calibration's calls without changing what they compute
        fn = kernels._BACKENDS["sort"][name]
        monkeypatch.setitem(kernels._BACKENDS["sort"], name, lambda x, fn=fn, name=name: calls.append(name) or fn(x))
    first = cpu_backend("sort")
    assert first in ("numpy", "torch") and calls.count("numpy") == calls.count("torch") == 3
    assert cpu_backend("sort") == first and len(calls) == 6  # cached: measured once per process
    kernels._measured_backend.cache_clear()


def test_unknown_backend_setting_is_an_error(monkeypatch):
    monkeypatch.setattr(kernels, "CPU_BACKEND", "fortran")
    with pytest.raises(ValueError, match="SAE_LENS_ORTHO_CPU_KERNELS must be auto, numpy or torch"):
        cpu_backend("sort")


def test_reverse_arange_is_cached_and_exact():
    a = reverse_arange(10, "cpu")
    assert a is reverse_arange(10, "cpu")
    assert a.tolist() == [(1 << 32) - 1 - i for i in range(10)]
