"""A real single-node Slurm cluster on localhost for the tests (Debian's slurmctld, slurmd, munge).

Started once per test session as root in a private folder with its own slurm.conf and ports, so it
never touches /etc/slurm; stopped at the end. `SLURM_CONF` points the client tools (sbatch, squeue,
scontrol, scancel) at it. Accounting is off (no slurmdbd), as on many small clusters.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.waiting import wait_until

DAEMONS = ("slurmctld", "slurmd", "munged")


def why_unavailable() -> str | None:
    """None when a local cluster can be started here; else the reason (for a clear skip)."""
    missing = [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): "
                "apt-get install slurmctld slurmd slurm-client munge (.ci/run does this)")
    if os.geteuid() != 0:
        return "a local Slurm cluster needs root (slurmd runs jobs as their users)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _daemon(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _ensure_munge() -> None:
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run([_daemon("mungekey") if shutil.which("mungekey") else "/usr/sbin/mungekey", "--create"],
                       check=True)
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    # munged refuses to run as root; its package user is "munge".
    subprocess.run(["runuser", "-u", "munge", "--", _daemon("munged")], check=True)


class LocalCluster:
    def __init__(self, folder: Path):
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.env = {"SLURM_CONF": str(self.conf)}

    def start(self) -> "LocalCluster":
        for sub in ("state", "spool", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        cpus = os.cpu_count() or 1
        mem_mb = max(1024, int(Path("/proc/meminfo").read_text().split()[1]) // 1024 - 2048)
        f = self.folder
        self.conf.write_text("\n".join([
            "ClusterName=loradeck-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
            f"StateSaveLocation={f}/state", f"SlurmdSpoolDir={f}/spool",
            f"SlurmctldPidFile={f}/slurmctld.pid", f"SlurmdPidFile={f}/slurmd.pid",
            f"SlurmctldLogFile={f}/log/slurmctld.log", f"SlurmdLogFile={f}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "DefMemPerCPU=1024",
            "SchedulerType=sched/backfill", "ReturnToService=2", "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SlurmctldTimeout=30", "SlurmdTimeout=30", "MinJobAge=600", "KillWait=5",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")
        _ensure_munge()
        env = {**os.environ, **self.env}
        subprocess.run([_daemon("slurmctld"), "-f", str(self.conf)], check=True, env=env)
        subprocess.run([_daemon("slurmd"), "-f", str(self.conf)], check=True, env=env)
        try:
            wait_until(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                                        env=env).stdout, 60, interval=0.5, message="an idle node")
        except AssertionError as exc:
            raise RuntimeError(f"the local Slurm cluster did not come up; see {f}/log") from exc
        return self

    def stop(self) -> None:
        env = {**os.environ, **self.env}
        subprocess.run(["scancel", "--user=root"], capture_output=True, env=env)
        # Let slurmd end the jobs' processes before it goes (and go anyway after 30 s).
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not subprocess.run(["squeue", "-h", "-t", "PD,R,CG"], capture_output=True, text=True,
                                                  env=env).stdout.strip(), 30, interval=0.5, message="no jobs left")
        for name in ("slurmd", "slurmctld"):
            pid_file = self.folder / f"{name}.pid"
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass

    def sbatch_wrap(self, command: str, *args: str) -> str:
        env = {**os.environ, **self.env}
        out = subprocess.run(["sbatch", "--parsable", f"--output={self.folder}/wrap-%j.out", *args, "--wrap", command],
                             capture_output=True, text=True,
                             env=env, check=True).stdout
        return out.strip().split(";")[0]
