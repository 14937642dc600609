"""A scripted stand-in for nvidia-ml-py, importable as `pynvml` by putting this folder first on
PYTHONPATH, so subprocesses (queue waiters) see the same fake GPUs as the test.

It reads $FAKE_NVML_FILE (JSON) on every call, so a test changes the free memory while waiters run:
    {"devices": [{"name": "...", "uuid": "GPU-...", "total": BYTES, "used": BYTES,
                  "compute": [[pid, bytes], ...], "graphics": [[pid, bytes], ...]}],
     "init_error": "Driver Not Loaded"}            (optional: nvmlInit fails with it)
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace


class NVMLError(Exception):
    pass


NVML_TEMPERATURE_GPU = 0


def _script() -> dict:
    with open(os.environ["FAKE_NVML_FILE"]) as fh:
        return json.load(fh)


def _dev(handle: int) -> dict:
    devices = _script()["devices"]
    if not isinstance(handle, int) or handle >= len(devices):
        raise NVMLError("Invalid Argument")
    return devices[handle]


def nvmlInit():
    error = _script().get("init_error")
    if error:
        raise NVMLError(error)


def nvmlShutdown():
    pass


def nvmlDeviceGetCount():
    return len(_script()["devices"])


def nvmlDeviceGetHandleByIndex(index):
    _dev(index)
    return index


def nvmlDeviceGetHandleByUUID(uuid):
    for i, d in enumerate(_script()["devices"]):
        if d["uuid"] == uuid:
            return i
    raise NVMLError("Not Found")


def nvmlDeviceGetIndex(handle):
    return handle


def nvmlDeviceGetName(handle):
    return _dev(handle)["name"]


def nvmlDeviceGetUUID(handle):
    return _dev(handle)["uuid"]


def nvmlDeviceGetMemoryInfo(handle):
    d = _dev(handle)
    return SimpleNamespace(total=d["total"], used=d["used"], free=d["total"] - d["used"])


def nvmlDeviceGetUtilizationRates(handle):
    return SimpleNamespace(gpu=50, memory=20)


def nvmlDeviceGetTemperature(handle, sensor):
    return 60


def nvmlDeviceGetComputeRunningProcesses(handle):
    return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in _dev(handle).get("compute", [])]


def nvmlDeviceGetGraphicsRunningProcesses(handle):
    return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in _dev(handle).get("graphics", [])]
