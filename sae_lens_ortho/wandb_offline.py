"""Read back what a wandb offline run logged (``wandb/offline-run-*/run-*.wandb``), without wandb's servers.

wandb (0.31) writes each run's transaction log with its Go core and ships no Python reader. The file is a
LevelDB-style record log (the format of ``leveldb/doc/log_format.md``, as written by
``wandb/core/pkg/leveldb``):

* a 7-byte file header: ident ``b":W&B"``, magic ``0xBEE1`` (uint16, little-endian), version (uint8, 0);
* then 32 KiB blocks (the file header is the start of block 0). A block holds tightly packed chunks: a
  7-byte chunk header (CRC-32 uint32 LE, payload length uint16 LE, type uint8), then the payload. The
  CRC is the standard IEEE CRC-32 (``zlib.crc32``) of the type byte and the payload. A chunk never
  crosses a block boundary; a block tail shorter than a chunk header is zero padding;
* type ``FULL`` (1) is a whole record; ``FIRST`` (2), ``MIDDLE`` (3)…, ``LAST`` (4) are the pieces of a
  record that spans blocks.

Each record is a serialized ``wandb.proto.wandb_internal_pb2.Record``. Logged metrics are ``history``
records: one per step, with items ``key`` → value (typed, or JSON text in ``value_json``).

Example::

    from sae_lens_ortho.wandb_offline import find_run_files, read_history
    rows = read_history("wandb/")                # every history row of the newest offline run there
    losses = [r["losses/ortho_loss"] for r in rows if "losses/ortho_loss" in r]
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["WandbLogError", "find_run_files", "iter_record_bytes", "read_history", "read_records"]

HEADER_IDENT = b":W&B"
HEADER_MAGIC = 0xBEE1
HEADER_LEN = 7  # ident (4) + magic (2) + version (1)
BLOCK_LEN = 32 * 1024
CHUNK_HEADER_LEN = 7  # crc32 (4) + length (2) + type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbLogError(ValueError):
    """The file is not a wandb transaction log, or it is corrupt (bad header, framing or checksum)."""


def find_run_files(path: str | Path) -> list[Path]:
    """The ``run-*.wandb`` files at ``path``: the file itself, the files in a run folder, or those of every
    ``offline-run-*`` / ``run-*`` folder under a ``wandb/`` folder (or its parent). Sorted oldest first
    (folder names start with a timestamp)."""
    path = Path(path)
    if path.is_file():
        return [path]
    candidates = [path, path / "wandb"]
    for folder in candidates:
        direct = sorted(folder.glob("run-*.wandb"))
        if direct:
            return direct
        nested = sorted(folder.glob("*run-*/run-*.wandb"), key=lambda p: p.parent.name.split("-", 1)[-1])
        if nested:
            return nested
    return []


def _resolve_one(path: str | Path) -> Path:
    files = find_run_files(path)
    if not files:
        raise FileNotFoundError(f"no wandb run file (run-*.wandb) at {path}")
    return files[-1]


def iter_record_bytes(path: str | Path, *, verify_crc: bool = True) -> Iterator[bytes]:
    """Yield the payload of every record in one ``.wandb`` file, reassembling multi-chunk records.

    Raises :class:`WandbLogError` on a bad file header, an impossible chunk (length past the block end,
    unknown type, a ``MIDDLE``/``LAST`` with no ``FIRST``) or, with ``verify_crc``, a checksum mismatch. A
    record cut off by the end of the file (a run still being written) is dropped silently.
    """
    data = Path(path).read_bytes()
    if len(data) < HEADER_LEN:
        raise WandbLogError(f"{path}: too short for a wandb header ({len(data)} bytes)")
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER_LEN])
    if ident != HEADER_IDENT or magic != HEADER_MAGIC:
        raise WandbLogError(f"{path}: not a wandb transaction log (header {data[:HEADER_LEN]!r})")
    if version != 0:
        raise WandbLogError(f"{path}: unsupported wandb log version {version}")

    pos = HEADER_LEN
    pending: list[bytes] | None = None  # pieces of a FIRST..LAST record being assembled
    while pos + CHUNK_HEADER_LEN <= len(data):
        block_left = BLOCK_LEN - pos % BLOCK_LEN
        if block_left < CHUNK_HEADER_LEN:  # zero-filled block trailer
            pos += block_left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if crc == 0 and length == 0 and kind == 0:  # zero padding up to the block end
            pos += block_left
            continue
        start = pos + CHUNK_HEADER_LEN
        end = start + length
        if length > block_left - CHUNK_HEADER_LEN:
            raise WandbLogError(f"{path}: chunk at byte {pos} overflows its block")
        if end > len(data):
            break  # truncated final chunk
        payload = data[start:end]
        if verify_crc and zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            raise WandbLogError(f"{path}: checksum mismatch in chunk at byte {pos}")
        pos = end
        if kind == FULL:
            if pending is not None:
                raise WandbLogError(f"{path}: FULL chunk at byte {start - CHUNK_HEADER_LEN} inside a record")
            yield payload
        elif kind == FIRST:
            if pending is not None:
                raise WandbLogError(f"{path}: FIRST chunk at byte {start - CHUNK_HEADER_LEN} inside a record")
            pending = [payload]
        elif kind in (MIDDLE, LAST):
            if pending is None:
                raise WandbLogError(f"{path}: chunk of type {kind} at byte {start - CHUNK_HEADER_LEN} without a FIRST")
            pending.append(payload)
            if kind == LAST:
                yield b"".join(pending)
                pending = None
        else:
            raise WandbLogError(f"{path}: unknown chunk type {kind} at byte {start - CHUNK_HEADER_LEN}")


def read_records(path: str | Path, *, verify_crc: bool = True) -> list[Any]:
    """Every record of a run as ``wandb_internal_pb2.Record`` messages, in file order.

    ``path`` is a ``.wandb`` file, a run folder, or a ``wandb/`` folder (then its newest run)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for payload in iter_record_bytes(_resolve_one(path), verify_crc=verify_crc):
        record = pb.Record()  # pyright: ignore[reportAttributeAccessIssue]  (generated protobuf class)
        record.ParseFromString(payload)
        out.append(record)
    return out


def _item_key(item: Any) -> str:
    return item.key if item.key else "/".join(item.nested_key)


def _item_value(item: Any) -> Any:
    """The value of a ``HistoryItem``: its typed oneof if set, else its ``value_json`` decoded."""
    kind = item.WhichOneof("value")
    if kind == "none":
        return None
    if kind in ("boolean", "integer", "number", "text"):
        return getattr(item, kind)
    if kind == "json":
        return json.loads(item.json)
    return json.loads(item.value_json) if item.value_json else None


def read_history(path: str | Path, *, verify_crc: bool = True) -> list[dict[str, Any]]:
    """The run's history rows, in logging order: one dict per ``history`` record, mapping each logged key
    (``losses/ortho_loss``, ``_step``, …) to its value (numbers as numbers; media such as histograms as
    the JSON dict wandb stored).

    ``path`` is a ``.wandb`` file, a run folder, or a ``wandb/`` folder (then its newest run)."""
    rows = []
    for record in read_records(path, verify_crc=verify_crc):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {_item_key(item): _item_value(item) for item in record.history.item}
        if "_step" not in row and record.history.HasField("step"):
            row["_step"] = record.history.step.num
        rows.append(row)
    return rows
