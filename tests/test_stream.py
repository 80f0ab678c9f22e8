"""The recorded synthetic stream: every reader sees the same rows, drawn without touching the global RNG."""

from __future__ import annotations

import pytest
import torch
from sae_lens.synthetic import ActivationGenerator

from sae_lens_ortho.evals.synthetic.stream import RecordedStream, with_reader


def _generator(n: int = 40) -> ActivationGenerator:
    probs = torch.linspace(0.02, 0.4, n)
    return ActivationGenerator(n, firing_probabilities=probs, std_firing_magnitudes=0.3, mean_firing_magnitudes=1.5)


def test_readers_replay_identical_rows_across_chunk_boundaries():
    stream = RecordedStream(_generator(), seed=7, chunk_rows=50)
    a, b = stream.reader(), stream.reader()
    rows_a = torch.cat([a.sample(n) for n in (13, 64, 1, 120)])  # crosses 50-row chunk boundaries
    rows_b = torch.cat([b(n).to_dense() for n in (100, 98)])  # training batches come sparse
    assert rows_a.shape == rows_b.shape == (198, 40)
    assert torch.equal(rows_a, rows_b)
    assert stream.rows == 200  # four chunks drawn once, replayed by the second reader
    assert (rows_a > 0).float().mean() > 0.05  # real activations, not zeros


def test_stream_equals_the_generator_under_its_seed_and_leaves_the_global_rng_alone():
    gen = _generator()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    rows = RecordedStream(gen, seed=7, chunk_rows=64).reader().sample(64)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG did not move
    torch.manual_seed(7)
    assert torch.equal(rows, gen.sample(64))  # the first chunk is exactly what the generator draws at the seed


def test_streams_of_different_seeds_differ_and_training_draws_do_not_shift_the_stream():
    gen = _generator()
    s = RecordedStream(gen, seed=1, chunk_rows=32)
    r1 = s.reader()
    first = r1.sample(32)
    torch.randn(1000)  # a training-side draw between batches
    second = r1.sample(32)
    fresh = RecordedStream(gen, seed=1, chunk_rows=32, record=False).reader()
    assert torch.equal(torch.cat([first, second]), fresh.sample(64))
    assert not torch.equal(first, RecordedStream(gen, seed=2, chunk_rows=32).reader().sample(32))


def test_unrecorded_stream_can_be_read_once():
    s = RecordedStream(_generator(), seed=0, record=False)
    s.reader()
    with pytest.raises(RuntimeError, match="read once"):
        s.reader()


def test_with_reader_gives_a_view_and_leaves_the_model_alone():
    from sae_lens.synthetic.synthetic_model import SyntheticModel, SyntheticModelConfig

    model = SyntheticModel(SyntheticModelConfig(num_features=30, hidden_dim=8, seed=3), device="cpu")
    reader = RecordedStream(model.activation_generator, seed=0).reader()
    view = with_reader(model, reader)
    assert view.activation_generator is reader
    assert model.activation_generator is not reader
    assert view.feature_dict is model.feature_dict


def test_disk_cache_replays_the_same_rows_in_a_new_stream(tmp_path):
    gen = _generator()
    first = RecordedStream(gen, seed=5, chunk_rows=30, cache_dir=tmp_path).reader().sample(70)  # 3 chunks
    assert len(list(tmp_path.rglob("chunk*.pt"))) == 3
    torch.manual_seed(0)
    gen.sample(500)  # move the global RNG: a cached replay must not depend on it
    again = RecordedStream(gen, seed=5, chunk_rows=30, cache_dir=tmp_path).reader().sample(100)  # 3 cached + 1 new
    fresh = RecordedStream(gen, seed=5, chunk_rows=30).reader().sample(100)
    assert torch.equal(again[:70], first)
    assert torch.equal(again, fresh)  # the 4th chunk continues the stream from the cached RNG state


def test_training_batches_are_sparse_and_equal_to_the_dense_rows():
    from sae_lens.synthetic.feature_dictionary import FeatureDictionary

    stream = RecordedStream(_generator(), seed=3, chunk_rows=40)
    sparse_reader, dense_reader = stream.reader(), stream.reader()
    fd = FeatureDictionary(40, 6, bias=0.5, seed=0)
    for n in (25, 30, 50):  # batches that cross chunk boundaries
        batch = sparse_reader(n)
        dense = dense_reader.sample(n)
        assert batch.is_sparse and batch.shape == dense.shape
        assert torch.equal(batch.to_dense(), dense)
        assert torch.allclose(fd(batch), fd(dense), atol=1e-5)  # the same hidden activations


def test_epochs_replay_the_first_rows_then_evaluation_continues_past_them():
    stream = RecordedStream(_generator(), seed=3, chunk_rows=20)
    plain = stream.reader().sample(140)  # rows 0..139 of the recording
    r = stream.reader(epoch_rows=60, train_rows=140)
    train = torch.cat([r(n).to_dense() for n in (25, 50, 45, 20)])  # batches cross chunk and epoch ends
    expected = torch.cat([plain[:60], plain[:60], plain[:20]])  # 60 + 60 + 20 = 140 training rows
    assert torch.equal(train, expected)
    assert torch.equal(r.sample(30), plain[60:90])  # after training: rows no training batch saw
    assert r.handed == 170


def test_epoch_sizes_must_be_whole_chunks():
    stream = RecordedStream(_generator(), seed=3, chunk_rows=20)
    with pytest.raises(ValueError, match="epoch_rows must be a positive multiple of chunk_rows 20"):
        stream.reader(epoch_rows=50, train_rows=100)
    with pytest.raises(ValueError, match="record=True"):
        RecordedStream(_generator(), seed=3, record=False).reader(epoch_rows=20, train_rows=40)


def test_record_rows_fills_the_cache_and_reports_progress(tmp_path):
    seen = []
    RecordedStream(_generator(), seed=4, chunk_rows=16, cache_dir=tmp_path).record_rows(
        40, lambda d, t: seen.append((d, t))
    )
    assert seen == [(16, 40), (32, 40), (40, 40)]
    assert len(list(tmp_path.rglob("chunk*.pt"))) == 3
