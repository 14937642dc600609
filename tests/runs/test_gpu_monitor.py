"""NVML sampling: no NVML on this machine (one event), and a fake pynvml that simulates devices."""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from types import SimpleNamespace

import pytest

from loradeck.trainer.events import EventWriter, read_all
from loradeck.trainer.gpu import monitor as gpu_monitor
from tests.fake_trainer import lookalike_trainer
from tests.waiting import wait_until

GiB = 1024 ** 3


class FakeNVMLError(Exception):
    pass


def fake_pynvml(devices, *, init_error=None, visible_pid_memory=True):
    """A pynvml stand-in. `devices`: dicts with name/uuid/total/used/util/temp/procs; a value that is an
    Exception instance is raised by the matching query (an unsupported field)."""
    calls = {"init": 0, "shutdown": 0, "name": 0, "memory": 0}

    def answer(value):
        if isinstance(value, Exception):
            raise value
        return value

    def dev(handle):
        return devices[handle]

    def init():
        calls["init"] += 1
        if init_error:
            raise init_error

    def name(h):
        calls["name"] += 1
        return answer(dev(h)["name"])

    def memory(h):
        calls["memory"] += 1
        d = dev(h)
        return answer(d.get("memory_error")) if d.get("memory_error") else SimpleNamespace(total=d["total"],
                                                                                          used=d["used"])

    def procs(h):
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in answer(dev(h)["procs"])]

    def by_uuid(uuid):
        for i, d in enumerate(devices):
            if d["uuid"] == uuid:
                return i
        raise FakeNVMLError("not found")

    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError
    mod.NVML_TEMPERATURE_GPU = 0
    mod.nvmlInit = init
    mod.nvmlShutdown = lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1)
    mod.nvmlDeviceGetCount = lambda: len(devices)
    mod.nvmlDeviceGetHandleByIndex = lambda i: i if i < len(devices) else answer(FakeNVMLError("bad index"))
    mod.nvmlDeviceGetHandleByUUID = by_uuid
    mod.nvmlDeviceGetIndex = lambda h: h
    mod.nvmlDeviceGetName = name
    mod.nvmlDeviceGetUUID = lambda h: answer(dev(h)["uuid"])
    mod.nvmlDeviceGetMemoryInfo = memory
    mod.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=answer(dev(h)["util"]), memory=10)
    mod.nvmlDeviceGetTemperature = lambda h, sensor: answer(dev(h)["temp"])
    mod.nvmlDeviceGetComputeRunningProcesses = procs
    mod.calls = calls
    return mod


def device(**over):
    base = {"name": b"NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaa", "total": 80 * GiB, "used": 5 * GiB,
            "util": 87, "temp": 61, "procs": [(os.getpid(), 3 * GiB), (999_999_1, 2 * GiB)]}
    base.update(over)
    return base


@pytest.fixture
def nvml(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def install(*devices, **kw):
        mod = fake_pynvml(list(devices), **kw)
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        return mod
    return install


def collect():
    events = []
    lock = threading.Lock()

    def emit(type_, **fields):
        with lock:
            events.append({"type": type_, **fields})
    return events, emit


def test_no_nvml_on_this_machine_emits_one_unavailable_event_and_stops(tmp_path):
    writer = EventWriter(tmp_path / "events.jsonl")
    sampler = gpu_monitor.start_sampler(writer, interval=0.05)
    sampler._thread.join(10)
    assert not sampler.running
    sampler.stop()
    writer.close()
    events = read_all(tmp_path / "events.jsonl")
    if gpu_monitor.query_devices():  # pragma: no cover - a machine with a GPU
        pytest.skip("this machine has a GPU")
    assert len(events) == 1
    assert events[0]["type"] == "gpu" and events[0]["available"] is False and events[0]["reason"]
    assert gpu_monitor.query_devices() == [] and gpu_monitor.unavailable_reason()


def test_nvml_init_failure_is_zero_devices_with_a_reason(nvml):
    nvml(device(), init_error=FakeNVMLError("Driver Not Loaded"))
    assert gpu_monitor.query_devices() == []
    assert "Driver Not Loaded" in gpu_monitor.unavailable_reason()
    events, emit = collect()
    sampler = gpu_monitor.start_sampler(emit, interval=0.01)
    sampler._thread.join(5)
    assert events == [{"type": "gpu", "available": False, "reason": gpu_monitor.unavailable_reason()}]


def test_zero_devices_is_one_unavailable_event(nvml):
    nvml()
    events, emit = collect()
    gpu_monitor.start_sampler(emit, interval=0.01)._thread.join(5)
    assert len(events) == 1 and events[0]["available"] is False and "no usable" in events[0]["reason"]


def test_sample_fields_of_a_device(nvml):
    nvml(device())
    [snap] = gpu_monitor.query_devices(pid=os.getpid())
    assert snap == {"available": True, "index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaa",
                    "mem_used": 5 * GiB, "mem_total": 80 * GiB, "util": 87, "mem_util": 10, "temperature": 61,
                    "proc_mem": 3 * GiB}


def test_fields_nvml_cannot_answer_are_none_not_a_crash(nvml):
    nvml(device(temp=FakeNVMLError("Not Supported"), util=FakeNVMLError("Not Supported"),
                procs=FakeNVMLError("No permission")))
    [snap] = gpu_monitor.query_devices(pid=os.getpid())
    assert snap["temperature"] is None and snap["util"] is None and snap["proc_mem"] is None
    assert snap["mem_used"] == 5 * GiB and "container" in snap["proc_mem_note"]


def test_process_missing_from_nvml_list_is_none_with_the_reason(nvml):
    # In a container NVML lists host pids: our own pid is not among them.
    nvml(device(procs=[(123456789, 3 * GiB)]))
    [snap] = gpu_monitor.query_devices(pid=os.getpid())
    assert snap["proc_mem"] is None and snap["proc_mem_note"] == gpu_monitor.PROC_MEM_HIDDEN
    nvml(device(procs=[(os.getpid(), None)]))  # listed, but memory not available (WDDM)
    assert gpu_monitor.query_devices(pid=os.getpid())[0]["proc_mem"] is None


def test_sampler_emits_about_every_interval_and_caches_slow_fields(nvml):
    mod = nvml(device(), device(name="NVIDIA A10", uuid="GPU-bbbb", procs=[]))
    events, emit = collect()
    started = time.monotonic()
    sampler = gpu_monitor.start_sampler(emit, interval=0.05)
    wait_until(lambda: sum(e["index"] == 1 for e in events) >= 3, 10, message="three samples of both GPUs")
    sampler.stop()
    elapsed = time.monotonic() - started
    assert not sampler.running and mod.calls["shutdown"] == 1
    by_index = {0: [e for e in events if e["index"] == 0], 1: [e for e in events if e["index"] == 1]}
    assert len(by_index[0]) == len(by_index[1]) == sampler.samples
    assert len(by_index[0]) <= elapsed / 0.05 + 2  # about every interval, never faster
    assert by_index[0][0]["proc_mem"] == 3 * GiB and by_index[1][0]["proc_mem"] is None
    assert by_index[1][0]["name"] == "NVIDIA A10"
    assert mod.calls["name"] == 2  # the name is read once per device, not per sample
    n = len(events)
    time.sleep(0.15)
    assert len(events) == n  # stopped means stopped


def test_sampler_counts_the_processes_of_its_process_group(nvml):
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # same process group
    try:
        nvml(device(procs=[(os.getpid(), 1 * GiB), (child.pid, 2 * GiB), (123456789, 4 * GiB)]))
        events, emit = collect()
        sampler = gpu_monitor.start_sampler(emit, interval=0.05)
        wait_until(lambda: events, 10, message="a first sample")
        sampler.stop()
        assert events[0]["proc_mem"] == 3 * GiB  # ours + our rank's, not the stranger's
    finally:
        child.kill()
        child.wait()


def test_cuda_visible_devices_selects_devices_by_index_or_uuid(nvml, monkeypatch):
    nvml(device(), device(name="second", uuid="GPU-bbbb"), device(name="third", uuid="GPU-cccc"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert [d["name"] for d in gpu_monitor.query_devices()] == ["third", "NVIDIA H100 80GB HBM3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")
    assert [(d["index"], d["name"]) for d in gpu_monitor.query_devices()] == [(1, "second")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_monitor.query_devices() == []


def test_a_failing_writer_never_kills_the_sampler(nvml):
    nvml(device())
    calls = []

    def emit(type_, **fields):
        calls.append(1)
        raise OSError("No space left on device")
    sampler = gpu_monitor.start_sampler(emit, interval=0.02)
    wait_until(lambda: len(calls) >= 3, 10, message="three failed writes")
    assert sampler.running
    sampler.stop()


def test_proc_mem_counts_the_other_ranks_of_the_run_in_their_own_sessions(tmp_path):
    """torch's launcher starts each rank in a new session: they are found by the run they train."""
    from pathlib import Path

    def rank(run_dir, cwd=None):
        return lookalike_trainer(run_dir, start_new_session=True, cwd=cwd)

    (tmp_path / "run").mkdir()
    # the sibling names the same folder relative to its own working folder
    ours, sibling, other = rank(tmp_path / "run"), rank("run", cwd=tmp_path), rank(tmp_path / "other")
    try:
        wait_until(lambda: all(b"loradeck.trainer.train.process" in Path(f"/proc/{p.pid}/cmdline").read_bytes()
                               for p in (ours, sibling, other)), 10, interval=0.01,
                   message="each to exec into its own command line")
        pids = gpu_monitor._GroupPids(ours.pid)
        assert ours.pid in pids and sibling.pid in pids
        assert other.pid not in pids and os.getpid() not in pids
    finally:
        for p in (ours, sibling, other):
            p.kill()
            p.wait()
