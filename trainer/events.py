"""The event protocol: JSON lines that a run (or a prep / caption task) appends and readers tail.

This module is the single definition of the schema and of its decoding; the trainer writes through
`EventWriter`, the TUI and CLI read through `EventReader`, `summarize` (a run's newest events, read
incrementally) and the field decoders (`number`, `reading`, `event_time`). docs/events.md documents it for humans. Each line is one JSON
object with at least `type` (a name below) and `time` (Unix seconds, float). Unknown types and fields
must be ignored by readers, so the schema can grow without breaking old monitors.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 1

# type -> fields a writer must provide (beyond `type` and `time`); others are optional.
REQUIRED: dict[str, tuple[str, ...]] = {
    # training runs (runs/<id>/events.jsonl)
    "run_started": ("run_id", "config", "environment"),
    "step": ("step", "total_steps", "epoch", "loss", "lr"),
    "checkpoint": ("step", "path"),
    "sample": ("step", "path", "prompt"),
    "warning": ("message",),
    "error": ("kind", "message", "hint"),
    "run_finished": ("status",),
    "gpu": ("available",),
    # background tasks (prep, captioning) run for the TUI with --events
    "task_started": ("task", "total"),
    "progress": ("task", "done", "total"),
    "item_failed": ("task", "item", "reason"),
    "task_finished": ("task", "status"),
}

# Optional fields, by type (docs/events.md says what each means; a test keeps the two in step).
# Writers may leave any of them out or set them to null; readers must cope with both.
OPTIONAL: dict[str, tuple[str, ...]] = {
    "run_started": ("device", "mixed_precision", "prediction_type", "total_steps", "start_step",
                    "resumed_from", "images", "buckets", "batches_per_epoch", "trainable_params",
                    "lora_modules", "attention_processor", "gradient_checkpointing", "latent_cache",
                    "text_embeddings_cached", "weight_dtype", "vae_dtype", "vram_estimate", "model_family"),
    "step": ("lr_te", "grad_norm", "step_time", "samples_per_sec", "rss_peak", "mem_allocated", "mem_peak"),
    "checkpoint": ("state", "epoch"),
    "sample": ("index",),
    "warning": ("hint",),
    "error": ("state", "step"),
    "run_finished": ("output", "steps_done", "message"),
    "gpu": ("index", "name", "uuid", "mem_used", "mem_total", "proc_mem", "proc_mem_note", "util",
            "mem_util", "temperature", "reason"),
    "task_started": ("skipped", "model"),
    "progress": ("item", "message", "images_per_sec"),
    "item_failed": (),
    "task_finished": ("report", "captioned", "skipped", "failed", "message"),
}
ERROR_KINDS = ("oom", "nan", "config", "model", "data", "io", "internal")
RUN_FINISHED_STATUS = ("completed", "stopped", "failed")
TASK_STATUS = ("completed", "stopped", "failed")


def make_event(type_: str, **fields: Any) -> dict[str, Any]:
    """Build an event dict, checking the required fields are present."""
    missing = [f for f in REQUIRED.get(type_, ()) if f not in fields]
    if missing:
        raise ValueError(f"event {type_!r} is missing {', '.join(missing)}")
    event = {"type": type_, "time": time.time()}
    event.update(fields)
    return event


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    return str(obj)


def dumps(event: dict[str, Any]) -> str:
    # NaN/inf are legal floats in loss values; JSON has none, so they go out as strings.
    def clean(v):
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            return str(v)
        return v
    return json.dumps({k: clean(v) for k, v in event.items()}, default=_default, ensure_ascii=False)


class EventWriter:
    """Appends events to a JSON-lines file, one `write` per line so readers never see half a line
    from two writers interleaving. Thread-safe (the NVML sampler shares it with the loop)."""

    def __init__(self, path: str | os.PathLike | None, *, echo=None):
        self.path = Path(path) if path else None
        self._echo = echo  # optional callable(str) e.g. print to stdout for --events
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8") if self.path else None

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = make_event(type_, **fields)
        line = dumps(event) + "\n"
        with self._lock:
            if self._fh:
                self._fh.write(line)
                self._fh.flush()
            if self._echo:
                self._echo(line)
        return event

    def sync(self) -> None:
        with self._lock:
            if self._fh:
                os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            if self._fh:
                self._fh.flush()
                self._fh.close()
                self._fh = None


def parse_line(line: str) -> dict[str, Any] | None:
    """One event from one line, or None for a blank or corrupt line (a crash can cut the last one)."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or "type" not in event:
        return None
    return event


class EventReader:
    """Tails an events file: each `read_new()` returns the complete lines added since the last call.

    A partial last line (the writer is mid-write) is kept back until its newline arrives.
    """

    def __init__(self, path: str | os.PathLike, *, offset: int = 0):
        self.path = Path(path)
        self._offset = offset  # start here (e.g. the current size: only events written from now on)
        self._partial = b""

    def read_new(self, max_bytes: int | None = None) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self._offset:  # file replaced or truncated: start over
                    self._offset, self._partial = 0, b""
                fh.seek(self._offset)
                chunk = fh.read(max_bytes) if max_bytes else fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events = []
        for raw in lines:
            event = parse_line(raw.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        return events


def read_all(path: str | os.PathLike) -> list[dict[str, Any]]:
    return EventReader(path).read_new()


def iter_file(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            event = parse_line(line)
            if event is not None:
                yield event


# ------------------------------------------------------------------------------------ decoding fields

def number(value: Any) -> float | None:
    """A numeric field as a float; None when it is absent, not a number, or NaN/inf (which `dumps`
    writes as text): safe for arithmetic and for JSON output (`loradeck runs --json`)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def reading(value: Any) -> float | None:
    """A measured field as a float, NaN and inf included (`dumps` writes them as strings): what a
    chart plots, where a NaN loss must show."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def event_time(event: dict[str, Any] | None) -> float:
    """An event's `time` in Unix seconds; -inf for no event (or no time), so it sorts first."""
    value = event.get("time") if event else None
    return float(value) if isinstance(value, (int, float)) else float("-inf")


# ---------------------------------------------------------------------------- a run's summary

_TYPE_RE = re.compile(rb'"type"\s*:\s*"([A-Za-z_]+)"')
SUMMARY_TYPES = ("run_started", "run_finished", "step", "error")
_READ_CHUNK = 4 * 1024 * 1024


class EventSummary:
    """What a run's state and listing need from its events file, kept up to date incrementally:
    later calls read only the bytes appended since (a long run's file is read once, not on every
    poll), and only each line's type is looked at until an event is asked for."""

    __slots__ = ("ino", "offset", "partial", "first_started", "last")

    def __init__(self, ino: int):
        self.ino, self.offset, self.partial = ino, 0, b""
        self.first_started: bytes | None = None
        self.last: dict[str, bytes] = {}  # type -> its newest raw line, parsed only when asked for

    def feed(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()  # a line still being written waits for its newline
        for raw in lines:
            # Only the type is looked at here (gpu and step events are most of the file).
            match = _TYPE_RE.search(raw, 0, 64) or _TYPE_RE.search(raw)
            if match is None:
                continue
            kind = match.group(1).decode()
            if kind not in SUMMARY_TYPES or not raw.rstrip().endswith(b"}"):
                continue  # a line a crash cut short never hides the complete one before it
            if kind == "run_started" and self.first_started is None:
                self.first_started = raw
            self.last[kind] = raw

    def events(self) -> dict[str, dict[str, Any]]:
        out = {}
        for kind, raw in self.last.items():
            event = parse_line(raw.decode("utf-8", errors="replace"))
            if event is not None and event.get("type") == kind:
                out[kind] = event
        if self.first_started is not None:
            event = parse_line(self.first_started.decode("utf-8", errors="replace"))
            if event is not None:
                out["first_run_started"] = event
        return out


_summaries: dict[str, EventSummary] = {}
_summaries_lock = threading.Lock()


def summarize(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The newest run_started, run_finished, step and error events of a run (and the first
    run_started, as `first_run_started`); {} when there is no events file yet."""
    key = str(path)
    with _summaries_lock:
        try:
            fh = open(path, "rb")
        except OSError:
            _summaries.pop(key, None)
            return {}
        with fh:
            st = os.fstat(fh.fileno())
            summary = _summaries.get(key)
            if summary is None or summary.ino != st.st_ino or st.st_size < summary.offset:
                summary = _summaries[key] = EventSummary(st.st_ino)  # new or replaced file
            fh.seek(summary.offset)
            while summary.offset < st.st_size:
                data = fh.read(min(_READ_CHUNK, st.st_size - summary.offset))
                if not data:
                    break
                summary.offset += len(data)
                summary.feed(data)
        return summary.events()


@dataclass
class ProgressEcho:
    """Writes task events as JSON lines to a stream (stdout) for a parent process such as the TUI."""

    stream: Any

    def __call__(self, line: str) -> None:
        self.stream.write(line)
        self.stream.flush()
