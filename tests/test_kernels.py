"""Device-specific fast paths against torch's own ops (the CUDA path is torch's op itself)."""

import torch

from sae_lens_ortho.kernels import reverse_arange, sort_int64


def test_numpy_sort_equals_torch_sort_on_packed_keys():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randint(-(2**62), 2**62, (100_000,), generator=g), torch.tensor([5, 5, 5, -1, 0])])
    assert torch.equal(sort_int64(x), x.sort().values)
    assert sort_int64(x).dtype == torch.int64


def test_non_1d_or_non_int64_inputs_take_torch_sort():
    x = torch.randint(0, 100, (4, 5))
    assert torch.equal(sort_int64(x), x.sort().values)
    y = torch.rand(50)
    assert torch.equal(sort_int64(y), y.sort().values)


def test_reverse_arange_is_cached_and_exact():
    a = reverse_arange(10, "cpu")
    assert a is reverse_arange(10, "cpu")
    assert a.tolist() == [(1 << 32) - 1 - i for i in range(10)]
