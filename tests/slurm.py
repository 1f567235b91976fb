"""A private single-node Slurm cluster for tests, started by hand from Debian's packages.

Everything lives in one temporary folder: its own MUNGE key and socket (``munged`` runs as the
``munge`` user), ``slurm.conf`` with the node line from ``slurmd -C``, state, spool, pid and log
files, and controller and node ports picked free. So two test runs on one machine never meet, and
a Slurm or MUNGE the machine already runs is not touched. No cgroups (``proctrack/linuxproc``,
``task/none``) and no accounting; finished tasks stay in ``squeue -t all`` for ``MinJobAge``
(1 h here). The GPU type is declared (one GPU without a device file) so that ``sbatch`` checks
``--gres=gpu`` requests, but nothing here has a GPU.

``stop`` drains the node and cancels every job first (stopping ``slurmd`` would leave running
jobs behind), then stops each daemon it started by its PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.load.stack import free_port

# Loaded here: munged's preexec function runs after the switch to the munge user, who may not
# be able to read this Python's modules.
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
PARTITION = "debug"


def _which(cmd: str) -> str | None:
    return shutil.which(cmd) or shutil.which(cmd, path="/usr/sbin:/sbin:/usr/bin")


def unavailable() -> str | None:
    """Why a private cluster cannot start on this machine, or None."""
    missing = [c for c in COMMANDS if _which(c) is None]
    if missing:
        return f"Slurm and MUNGE are not installed ({', '.join(missing)} missing): run `make slurm`, which CI runs"
    if os.geteuid() != 0:
        return "a private Slurm needs root: slurmd runs each job as its user, and munged runs as the munge user"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "there is no munge user (the munge package creates it)"
    return None


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, so a killed run leaves no daemon."""
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SlurmCluster:
    """slurmctld + slurmd + munged under ``self.root``; ``env()`` points Slurm's commands at it."""

    def __init__(self) -> None:
        # Under /tmp itself: munged insists that every folder above its socket is searchable by
        # it and writable by nobody else (pytest's folders are root's, mode 0700).
        self.root = Path(tempfile.mkdtemp(prefix="metamers-slurm-", dir="/tmp"))
        self.root.chmod(0o755)
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.node = ""

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf)}

    # -- start and stop ---------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> None:
        munge = self.root / "munge"
        munge.mkdir(mode=0o755)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for p in (munge, key):
            shutil.chown(p, "munge", "munge")
        socket = munge / "munge.socket.2"
        self._spawn("munged", ["munged", "--foreground", f"--socket={socket}", f"--key-file={key}", f"--pid-file={munge / 'munged.pid'}",
                               f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}"], user="munge")
        self._until(lambda: socket.exists(), timeout_s, "munged did not create its socket")
        node_line = subprocess.run([_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        self.node = re.match(r"NodeName=(\S+)", node_line).group(1)  # type: ignore[union-attr]
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir()
        (self.root / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File=/dev/null\n")
        self.conf.write_text(f"""\
ClusterName=metamers-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket}
CredType=cred/munge
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MinJobAge=3600
ReturnToService=2
GresTypes=gpu
{node_line} NodeAddr=127.0.0.1 Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._until(lambda: self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle", timeout_s,
                    "the node did not become idle")

    def stop(self) -> None:
        """Drain, cancel every job and wait for them to end; then stop each daemon by PID."""
        try:
            if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
                self.run("scontrol", "update", f"NodeName={self.node}", "State=DRAIN", "Reason=test-cluster-stopping", check=False)
                self.run("scancel", f"--user={pwd.getpwuid(os.geteuid()).pw_name}", check=False)
                try:
                    self._until(lambda: not self.run("squeue", "-h", "-t", "PD,R,CG,S", check=False).stdout.strip(), 30, "")
                except TimeoutError:
                    print(f"[slurm] jobs still running after scancel:\n{self.run('squeue', check=False).stdout}")
        finally:
            for name in ("slurmd", "slurmctld", "munged"):
                proc = self.procs.pop(name, None)
                if proc is None or proc.poll() is not None:
                    continue
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            self._end_step_daemons()
            shutil.rmtree(self.root, ignore_errors=True)

    def _end_step_daemons(self, timeout_s: float = 10.0) -> None:
        """slurmd forks a slurmstepd per job, which outlives slurmd; ours run in ``self.root``."""
        deadline = time.monotonic() + timeout_s
        while (pids := self._step_daemons()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _step_daemons(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "cmdline").read_bytes().split(b"\0")[0].endswith(b"slurmstepd") and \
                        Path(os.readlink(entry / "cwd")) == self.root and (entry / "stat").read_text().split(") ")[1][0] != "Z":
                    pids.append(int(entry.name))
            except (OSError, IndexError):
                continue
        return pids

    def _spawn(self, name: str, argv: list[str], user: str | None = None) -> None:
        argv = [_which(argv[0]) or argv[0], *argv[1:]]
        with open(self.root / f"{name}.out", "ab") as out:
            self.procs[name] = subprocess.Popen(argv, cwd=self.root, env=self.env(), stdout=out, stderr=subprocess.STDOUT, user=user,
                                                group=user, extra_groups=[] if user else None, start_new_session=True,
                                                preexec_fn=_die_with_parent)

    def _until(self, ok: object, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}\n{self.logs()}")
            if ok():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise TimeoutError(f"{what} within {timeout_s:.0f} s\n{self.logs()}" if what else "timed out")

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for f in sorted([*self.root.glob("*.out"), *self.root.glob("log/*.log"), *self.root.glob("munge/*.log")]):
            parts.append(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # -- jobs ---------------------------------------------------------------------------------

    def run(self, *argv: str, check: bool = True, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """A Slurm command against this cluster (``env``: the submitting shell's environment)."""
        cmd = [_which(argv[0]) or argv[0], *argv[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, env=self.env(env), cwd=cwd, timeout=60)

    def tasks(self, job: str, fmt: str = "%T") -> dict[str, str]:
        """Array task id ("12_1") → ``squeue -t all`` field(s), for every task of ``job``."""
        out = self.run("squeue", "-h", "-r", "-t", "all", "-j", job, "-o", f"%i {fmt}").stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())

    def wait(self, job: str, tasks: int, timeout_s: float = 240.0) -> dict[str, str]:
        """Wait until all ``tasks`` array tasks of ``job`` have ended; returns their states."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = self.tasks(job)
            if len(states) == tasks and set(states.values()) <= TERMINAL:
                return states
            time.sleep(0.5)
        raise TimeoutError(f"job {job} did not end within {timeout_s:.0f} s: {self.tasks(job)}\n{self.logs()}")
