"""One recorded stream of synthetic feature activations that every arm of a comparison replays.

Paired comparisons need every architecture of a seed to see the same batches. SAELens's ``ActivationGenerator``
draws from the global torch RNG, which training also draws from (initialisation, dead-latent resampling, random
chunks), so two arms would drift apart after the first draw that differs. :class:`RecordedStream` draws from a
generator-private RNG state (saved and restored around each draw, so the global RNG is untouched) in large
chunks (one ``sample`` call per chunk is far cheaper per row than one per batch on CPU), keeps what it drew in a
compact sparse form, and hands each arm a :class:`StreamReader` that replays the recording from the start,
drawing more when a reader runs past its end. Training and evaluation of every arm therefore see the same rows.

A reader stands in for the ``ActivationGenerator`` (an ``nn.Module``: ``reader(n)`` and ``reader.sample(n)`` give
dense rows); :func:`with_reader` gives SAELens's ``SyntheticSAERunner`` a view of the synthetic model that samples
from it, without changing the model other arms use.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["RecordedStream", "StreamReader", "with_reader"]


@contextlib.contextmanager
def _rng_state(state: dict[str, Tensor], device: torch.device) -> Iterator[None]:
    """Run with the RNG state ``state`` (CPU, and CUDA for a CUDA device); store the advanced state back into it
    and restore the caller's global state afterwards."""
    cuda = device.type == "cuda"
    saved_cpu = torch.get_rng_state()
    saved_cuda = torch.cuda.get_rng_state(device) if cuda else None
    torch.set_rng_state(state["cpu"])
    if cuda:
        torch.cuda.set_rng_state(state["cuda"], device)
    try:
        yield
    finally:
        state["cpu"] = torch.get_rng_state()
        if cuda:
            state["cuda"] = torch.cuda.get_rng_state(device)
        torch.set_rng_state(saved_cpu)
        if saved_cuda is not None:
            torch.cuda.set_rng_state(saved_cuda, device)


class RecordedStream:
    """Feature activations of ``generator`` drawn from a private RNG seeded with ``seed``, recorded for replay.

    ``chunk_rows`` rows are drawn per ``generator.sample`` call. Rows are stored as (row pointer, feature index,
    value) on the CPU: about 8 bytes per firing feature. ``record=False`` keeps nothing (a single pass, e.g. the
    16k benchmark on a GPU, where recording 200M rows would not fit): then only one reader may be opened.
    ``cache_dir`` keeps recorded chunks on disk (one file per chunk) so that a later process with the same
    generator, seed and chunk size replays them instead of drawing again; the caller must make the folder
    specific to the generator (e.g. a hash of the synthetic model's config), since its identity is not checked.
    """

    def __init__(
        self, generator: Any, seed: int, *, chunk_rows: int = 16384, record: bool = True, cache_dir: Any = None
    ):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be an integer >= 1, got {chunk_rows!r}")
        self.generator = generator
        self.num_features = int(generator.num_features)
        self.chunk_rows = chunk_rows
        self.record = record
        self.device = torch.device(_device_of(generator))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            self._state = {"cpu": torch.get_rng_state()}
            if self.device.type == "cuda":
                self._state["cuda"] = torch.cuda.get_rng_state(self.device)
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / f"seed{seed}_rows{chunk_rows}"
        self._chunks: list[tuple[Tensor, Tensor, Tensor]] = []  # (crow [r+1] int64, col int32, val float32)
        self._rows = 0
        self._readers = 0

    @property
    def rows(self) -> int:
        """Rows drawn so far."""
        return self._rows

    def reader(self, *, epoch_rows: int | None = None, train_rows: int | None = None) -> StreamReader:
        """A new reader over the stream, from its first row.

        With ``epoch_rows``, the first ``train_rows`` rows it hands out replay the stream's first ``epoch_rows``
        rows as epochs (row ``i`` is row ``i % epoch_rows``), and what it reads after them continues from row
        ``epoch_rows``: rows no training batch saw (the final evaluation's). Both must be multiples of the chunk
        size, so that an epoch is whole chunks."""
        if not self.record and self._readers:
            raise RuntimeError("a RecordedStream with record=False can be read once; open it with record=True")
        if epoch_rows is not None:
            if not self.record:
                raise ValueError("epochs replay recorded rows: open the stream with record=True")
            for name, v in (("epoch_rows", epoch_rows), ("train_rows", train_rows)):
                if not isinstance(v, int) or v < 1 or v % self.chunk_rows:
                    raise ValueError(f"{name} must be a positive multiple of chunk_rows {self.chunk_rows}, got {v!r}")
        self._readers += 1
        return StreamReader(self, epoch_rows=epoch_rows, train_rows=train_rows)

    def record_rows(self, rows: int, progress: Callable[[int, int], None] | None = None) -> None:
        """Draw (or load from the cache) chunks until at least ``rows`` rows are recorded; ``progress(done,
        total)`` is called after each chunk."""
        while self._rows < rows:
            self._chunk(len(self._chunks))
            if progress is not None:
                progress(min(self._rows, rows), rows)

    @torch.no_grad()
    def _draw(self) -> Tensor | None:
        """Draw (or load from the cache) the next chunk; the dense rows of a fresh draw, None for a cached one."""
        cached = self._cached(len(self._chunks))
        if cached is not None:  # the stream's RNG state after this chunk is stored with it
            chunk, self._state = cached
            self._chunks.append(chunk)
            self._rows += chunk[0].numel() - 1
            return None
        with _rng_state(self._state, self.device):
            acts = self.generator.sample(self.chunk_rows)
        acts = acts.to_dense() if acts.is_sparse else acts
        self._rows += acts.shape[0]
        if self.record:
            self._chunks.append(_compress(acts))
            self._store(len(self._chunks) - 1)
        return acts

    def _cached(self, index: int) -> tuple[tuple[Tensor, Tensor, Tensor], dict[str, Tensor]] | None:
        if self.cache_dir is None or not self.record:
            return None
        path = self.cache_dir / f"chunk{index:06d}.pt"
        if not path.exists():
            return None
        data = torch.load(path, weights_only=True)
        return (data["crow"], data["col"], data["val"]), dict(data["state"])

    def _store(self, index: int) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        crow, col, val = self._chunks[index]
        tmp = self.cache_dir / f".chunk{index:06d}.tmp"
        torch.save({"crow": crow, "col": col, "val": val, "state": self._state}, tmp)
        tmp.replace(self.cache_dir / f"chunk{index:06d}.pt")  # atomic: a killed run leaves no half chunk

    def _chunk(self, index: int) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """The ``index``-th chunk: recorded (compressed) or, without recording, freshly drawn (dense)."""
        if not self.record:
            acts = self._draw()
            assert acts is not None  # an unrecorded stream has no cache
            return acts
        while index >= len(self._chunks):
            self._draw()
        return self._chunks[index]


class StreamReader(nn.Module):
    """Reads a :class:`RecordedStream` in order, standing in for the ``ActivationGenerator`` it records.

    ``reader.sample(n)`` returns dense rows (what SAELens's evaluation indexes); ``reader(n)``, which SAELens's
    ``SyntheticActivationIterator`` calls for training batches, returns them as a sparse COO tensor when the
    stream is recorded, which ``FeatureDictionary`` multiplies sparsely (the same hidden activations, without
    a dense [batch, num_features] matmul). Both advance the same position. ``epoch_rows`` / ``train_rows``: see
    :meth:`RecordedStream.reader`.
    """

    def __init__(self, stream: RecordedStream, *, epoch_rows: int | None = None, train_rows: int | None = None):
        super().__init__()
        self.stream = stream  # a plain attribute: the reader owns no parameters
        self.num_features = stream.num_features
        self.epoch_rows = epoch_rows
        self.train_rows = train_rows or 0
        self.handed = 0
        """Rows handed out so far."""
        self.progress: Callable[[int], None] | None = None
        """Called with ``handed`` after each read (progress lines of a long training run)."""
        self._chunk_index = -1  # the recorded chunk in _current
        self._current: Tensor | tuple[Tensor, Tensor, Tensor] | None = None
        self._offset = 0  # unrecorded streams: rows of the current chunk already handed out
        self._dense: Tensor | None = None  # the current recorded chunk, expanded (for sample())

    def forward(self, batch_size: int) -> Tensor:
        parts = self._take(batch_size)
        if any(isinstance(chunk, Tensor) for chunk, _, _ in parts):
            return self._dense_rows(parts)
        return self._sparse_rows(parts, batch_size)

    def sample(self, batch_size: int) -> Tensor:
        """The next ``batch_size`` rows [batch_size, num_features] (dense, on the generator's device)."""
        return self._dense_rows(self._take(batch_size))

    def _position(self) -> tuple[int, int]:
        """(row of the recording that the next row is, how many rows follow it before a jump; 2**62: no jump)."""
        if self.epoch_rows is None:
            return self.handed, 2**62
        if self.handed < self.train_rows:  # inside the training epochs
            row = self.handed % self.epoch_rows
            return row, min(self.epoch_rows - row, self.train_rows - self.handed)
        return self.epoch_rows + self.handed - self.train_rows, 2**62

    def _take(self, batch_size: int) -> list[tuple[Any, int, int]]:
        """(chunk, start, stop) row ranges covering the next ``batch_size`` rows."""
        parts: list[tuple[Any, int, int]] = []
        need = batch_size
        while need > 0:
            if not self.stream.record:  # a single pass: chunks come fresh, in order
                if self._current is None or self._offset >= _chunk_rows(self._current):
                    self._current, self._dense, self._offset = self.stream._chunk(0), None, 0
                start = self._offset
                take = min(need, _chunk_rows(self._current) - start)
                self._offset += take
            else:  # recorded chunks all hold chunk_rows rows
                row, run = self._position()
                index, start = divmod(row, self.stream.chunk_rows)
                if index != self._chunk_index:
                    self._current, self._dense, self._chunk_index = self.stream._chunk(index), None, index
                assert self._current is not None
                take = min(need, run, _chunk_rows(self._current) - start)
            parts.append((self._current, start, start + take))
            self.handed += take
            need -= take
        if self.progress is not None:
            self.progress(self.handed)
        return parts

    def _dense_rows(self, parts: list[tuple[Any, int, int]]) -> Tensor:
        out = []
        for chunk, start, stop in parts:
            if isinstance(chunk, Tensor):
                out.append(chunk[start:stop])
                continue
            if chunk is self._current:  # expand the current chunk once, not per batch
                if self._dense is None:
                    self._dense = _expand(chunk, self.num_features, self.stream.device)
                out.append(self._dense[start:stop])
            else:
                out.append(_expand(chunk, self.num_features, self.stream.device)[start:stop])
        return out[0] if len(out) == 1 else torch.cat(out)

    def _sparse_rows(self, parts: list[tuple[Any, int, int]], batch_size: int) -> Tensor:
        rows, cols, vals, base = [], [], [], 0
        for (crow, col, val), start, stop in parts:
            lo, hi = int(crow[start]), int(crow[stop])
            counts = crow[start : stop + 1].diff()
            rows.append(torch.repeat_interleave(torch.arange(base, base + stop - start), counts))
            cols.append(col[lo:hi].long())
            vals.append(val[lo:hi])
            base += stop - start
        indices = torch.stack([torch.cat(rows), torch.cat(cols)]).to(self.stream.device)
        return torch.sparse_coo_tensor(
            indices,
            torch.cat(vals).to(self.stream.device),
            (batch_size, self.num_features),
            is_coalesced=True,
            check_invariants=False,  # built sorted and in range above
        )


def _chunk_rows(chunk: Tensor | tuple[Tensor, Tensor, Tensor]) -> int:
    return chunk.shape[0] if isinstance(chunk, Tensor) else chunk[0].numel() - 1


def with_reader(model: nn.Module, reader: StreamReader) -> nn.Module:
    """A shallow view of a ``SyntheticModel`` whose ``activation_generator`` is ``reader``; the model and its
    feature dictionary are shared, the model itself is not changed."""
    view = copy.copy(model)
    view._modules = dict(model._modules)  # type: ignore[assignment]  (a copy.copy shares the dict)
    view.activation_generator = reader
    return view


def _device_of(generator: Any) -> torch.device:
    probs = getattr(generator, "firing_probabilities", None)
    return probs.device if isinstance(probs, Tensor) else torch.device("cpu")


def _compress(acts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Dense [r, n] -> (crow [r+1] int64, col int32, val float32), on the CPU."""
    nz = acts.nonzero()
    counts = torch.bincount(nz[:, 0], minlength=acts.shape[0])
    crow = torch.zeros(acts.shape[0] + 1, dtype=torch.int64)
    crow[1:] = counts.cumsum(0).cpu()
    return crow, nz[:, 1].to(torch.int32).cpu(), acts[nz[:, 0], nz[:, 1]].float().cpu()


def _expand(chunk: tuple[Tensor, Tensor, Tensor], n: int, device: torch.device) -> Tensor:
    crow, col, val = chunk
    rows = torch.repeat_interleave(torch.arange(crow.numel() - 1), crow.diff())
    out = torch.zeros(crow.numel() - 1, n, dtype=torch.float32, device=device)
    out[rows.to(device), col.to(device).long()] = val.to(device)
    return out
