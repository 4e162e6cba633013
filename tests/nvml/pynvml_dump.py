#!/usr/bin/env python3
"""Print, as JSON on stdout, the GPU inventory that nvidia-ml-py (pynvml) sees.

Uses whatever libnvidia-ml.so.1 the dynamic loader finds (put a directory
holding a libnvidia-ml.so.1 -> libnvml_sim.so symlink first in
LD_LIBRARY_PATH to read the NVML simulator). Exit status 0 on success;
1 (with the NVML error on stderr) when NVML cannot be initialised.

Output shape (all sizes in bytes, all keys always present):

{
  "driver_version": "570.133.20",
  "nvml_version": "12.570.133.20",
  "cuda_driver_version": 12080,
  "device_count": 2,
  "gpus": [
    {
      "index": 0,
      "lost": false,                 # true: the GPU is lost; then only
      "error": null,                 #   "index", "lost" and "error" are meaningful
      "uuid": "GPU-...",
      "name": "NVIDIA A100-SXM4-40GB",
      "pci_bus_id": "00000000:07:00.0",
      "memory": {"total": 0, "reserved": 0, "used": 0, "free": 0},
      "mig_mode": {"current": 1, "pending": 1},   # null when MIG is not supported
      "processes": {                 # the _v3 lists; "used" is null where
        "compute": [                 #   NVML reports NVML_VALUE_NOT_AVAILABLE
          {"pid": 4242, "used": 0, "gpu_instance_id": 4294967295, "compute_instance_id": 4294967295}
        ],
        "graphics": [],
        "mps": []
      },
      "process_utilization": [       # null: NOT_SUPPORTED (MIG); []: NOT_FOUND
        {"pid": 4242, "timestamp": 0, "sm": 0, "mem": 0, "enc": 0, "dec": 0}
      ],
      "mig_devices": [               # empty unless MIG mode is current
        {
          "index": 0,                # for nvmlDeviceGetMigDeviceHandleByIndex
          "uuid": "MIG-...",
          "name": "NVIDIA A100-SXM4-40GB MIG 3g.20gb",
          "gpu_instance_id": 2,
          "compute_instance_id": 0,
          "memory": {"total": 0, "reserved": 0, "used": 0, "free": 0},
          "processes": {"compute": [], "graphics": [], "mps": []}
        }
      ]
    }
  ]
}
"""

import json
import sys

import pynvml


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def memory(handle):
    info = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    return {
        "total": info.total,
        "reserved": info.reserved,
        "used": info.used,
        "free": info.free,
    }


def process_entries(items):
    return [
        {
            "pid": p.pid,
            "used": p.usedGpuMemory,
            "gpu_instance_id": p.gpuInstanceId,
            "compute_instance_id": p.computeInstanceId,
        }
        for p in items
    ]


def processes(handle):
    return {
        "compute": process_entries(pynvml.nvmlDeviceGetComputeRunningProcesses(handle)),
        "graphics": process_entries(pynvml.nvmlDeviceGetGraphicsRunningProcesses(handle)),
        "mps": process_entries(pynvml.nvmlDeviceGetMPSComputeRunningProcesses(handle)),
    }


def process_utilization(handle):
    try:
        samples = pynvml.nvmlDeviceGetProcessUtilization(handle, 0)
    except pynvml.NVMLError_NotFound:
        return []
    except pynvml.NVMLError_NotSupported:
        return None
    return [
        {
            "pid": s.pid,
            "timestamp": s.timeStamp,
            "sm": s.smUtil,
            "mem": s.memUtil,
            "enc": s.encUtil,
            "dec": s.decUtil,
        }
        for s in samples
    ]


def mig_devices(handle):
    devices = []
    for index in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        except pynvml.NVMLError_NotFound:
            # Indexes past the last existing MIG device.
            break
        devices.append({
            "index": index,
            "uuid": text(pynvml.nvmlDeviceGetUUID(mig)),
            "name": text(pynvml.nvmlDeviceGetName(mig)),
            "gpu_instance_id": pynvml.nvmlDeviceGetGpuInstanceId(mig),
            "compute_instance_id": pynvml.nvmlDeviceGetComputeInstanceId(mig),
            "memory": memory(mig),
            "processes": processes(mig),
        })
    return devices


def gpu(index):
    entry = {
        "index": index,
        "lost": False,
        "error": None,
        "uuid": None,
        "name": None,
        "pci_bus_id": None,
        "memory": None,
        "mig_mode": None,
        "processes": None,
        "process_utilization": None,
        "mig_devices": [],
    }
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        entry["uuid"] = text(pynvml.nvmlDeviceGetUUID(handle))
        entry["name"] = text(pynvml.nvmlDeviceGetName(handle))
        entry["pci_bus_id"] = text(pynvml.nvmlDeviceGetPciInfo(handle).busId)
        entry["memory"] = memory(handle)
        entry["processes"] = processes(handle)
        entry["process_utilization"] = process_utilization(handle)
        try:
            current, pending = pynvml.nvmlDeviceGetMigMode(handle)
            entry["mig_mode"] = {"current": current, "pending": pending}
        except pynvml.NVMLError_NotSupported:
            pass
        if entry["mig_mode"] and entry["mig_mode"]["current"] == pynvml.NVML_DEVICE_MIG_ENABLE:
            entry["mig_devices"] = mig_devices(handle)
    except pynvml.NVMLError_GpuIsLost as e:
        entry["lost"] = True
        entry["error"] = str(e)
    return entry


def main():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        print(f"pynvml_dump: nvmlInit failed: {e}", file=sys.stderr)
        return 1
    try:
        count = pynvml.nvmlDeviceGetCount()
        report = {
            "driver_version": text(pynvml.nvmlSystemGetDriverVersion()),
            "nvml_version": text(pynvml.nvmlSystemGetNVMLVersion()),
            "cuda_driver_version": pynvml.nvmlSystemGetCudaDriverVersion(),
            "device_count": count,
            "gpus": [gpu(i) for i in range(count)],
        }
    finally:
        pynvml.nvmlShutdown()
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
