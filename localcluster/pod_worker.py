"""One pod's life on the process-kubelet: volumes, containers as local processes, restarts
by restartPolicy, graceful deletion, and the pod status it reports to the API server.

Each pod has one worker thread and that thread is the only writer of the pod's status."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .faults import FAULT_ANNOTATION
from .podenv import EnvError, container_argv, container_env
from .volumes import VolumeError, ensure_file

if TYPE_CHECKING:
    from .pod_host import PodHost

log = logging.getLogger("localcluster.kubelet")

TERMINATION_MESSAGE_LIMIT = 4096
FALLBACK_LOG_LINES = 80
MAX_BACKOFF_SECONDS = 10.0  # the real kubelet caps at 5 minutes; tests cannot wait that long


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code_of(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Container:
    spec: dict
    init: bool = False
    proc: subprocess.Popen | None = None
    restart_count: int = 0
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    kill_reason: str | None = None  # set when the kubelet itself kills the process
    next_start: float | None = None
    done: bool = False  # terminated and not to be restarted

    @property
    def name(self) -> str:
        return self.spec["name"]

    def status(self) -> dict:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": f"process://{self.spec.get('image', '')}",
            "containerID": f"process://{self.proc.pid}" if self.proc else "",
            "ready": running,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


class PodWorker(threading.Thread):
    def __init__(self, host: PodHost, pod: dict, pod_ip: str):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.host = host
        self.node = host.runtime
        self.pod = pod
        self.pod_ip = pod_ip
        self.uid = meta["uid"]
        self.ns, self.pod_name = meta["namespace"], meta["name"]
        self.dir = self.node.state_dir / "pods" / f"{self.ns}_{self.pod_name}_{self.uid[:8]}"
        self.init_containers = [Container(c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [Container(c) for c in pod["spec"].get("containers") or []]
        self.restart_policy = pod["spec"].get("restartPolicy", "Always")
        self.phase = "Pending"
        self.start_time = now_rfc3339()
        self.initialized = not self.init_containers
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.delete_grace: float | None = None  # set when the API asks for deletion
        self.abandon = False  # node lost: stop everything, report nothing more
        self.faults: list[tuple[str, str | None]] = []
        self._handled_faults: set[str] = set()  # annotation values already acted on
        self.volume_paths: dict[str, Path] = {}
        self.waiting_message = ""
        self._last_status: dict | None = None

    # ---- requests from the kubelet's watch thread -------------------------------------------

    def update(self, pod: dict) -> None:
        with self.lock:
            self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and self.delete_grace is None:
            self.delete_grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            self.wake.set()
        self._take_fault((pod["metadata"].get("annotations") or {}).get(FAULT_ANNOTATION))

    def _take_fault(self, value: str | None) -> None:
        """A fault a test asked for on the pod (faults.py), acted on once per value."""
        if not value or value in self._handled_faults:
            return
        self._handled_faults.add(value)
        action, _, container = value.split("#", 1)[0].partition(":")
        if action not in ("kill", "oom"):
            log.warning("unknown fault %r on pod %s", value, self.pod_name)
            return
        with self.lock:
            self.faults.append((action, container or None))
        self.wake.set()

    def abandon_now(self) -> None:
        """Its node is lost, or the pod object is gone from the API: kill every process without
        grace and write nothing more to the API."""
        self.abandon = True
        self.wake.set()

    # ---- the worker loop ----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # a bug here must not take the kubelet down with it
            log.exception("pod worker %s/%s crashed", self.ns, self.pod_name)
        finally:
            self._kill_all(signal.SIGKILL)
            self.host.worker_finished(self)

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.report()
        while not self._setup_volumes():
            if self._stopping():
                return self._finish_deletion()
            self.report()
            self.wake.wait(2.0)
            self.wake.clear()
        for c in self.init_containers:
            while not c.done:
                if self._stopping():
                    return self._finish_deletion()
                self._step(c)
                if c.done and c.state.get("terminated", {}).get("exitCode") != 0:
                    self.phase = "Failed"
                    self.report()
                    return self._wait_for_deletion()
                self.report()
                self._sleep(0.1)
        self.initialized = True
        while True:
            if self._stopping():
                return self._finish_deletion()
            self._apply_faults()
            for c in self.containers:
                self._step(c)
            if all(c.done for c in self.containers):
                ok = all(c.state["terminated"]["exitCode"] == 0 for c in self.containers)
                self.phase = "Succeeded" if ok else "Failed"
                self.report()
                return self._wait_for_deletion()
            if any("running" in c.state for c in self.containers):
                self.phase = "Running"
            self.report()
            self._sleep(0.2)

    def _sleep(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    def _stopping(self) -> bool:
        return self.abandon or self.delete_grace is not None or self.node.stopping.is_set()

    def _wait_for_deletion(self) -> None:
        """A finished pod stays until the API deletes it (Job controller, GC, a user)."""
        while not (self.abandon or self.delete_grace is not None or self.node.stopping.is_set()):
            self._sleep(1.0)
        if self.delete_grace is not None and not self.abandon:
            self._finish_deletion()

    # ---- one container: start, observe exit, restart per policy --------------------------------

    def _step(self, c: Container) -> None:
        if c.done:
            return
        if c.proc is None:
            if c.next_start is not None and time.monotonic() < c.next_start:
                return
            self._start(c)
            return
        rc = c.proc.poll()
        if rc is None:
            return
        terminated = self._terminated_state(c, rc)
        c.state = {"terminated": terminated}
        c.proc = None
        restart = self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and terminated["exitCode"] != 0)
        if c.init:
            restart = self.restart_policy != "Never" and terminated["exitCode"] != 0
        if not restart:
            c.done = True
            return
        c.last_state = {"terminated": terminated}
        c.restart_count += 1
        backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (c.restart_count - 1))
        c.next_start = time.monotonic() + backoff
        c.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {backoff:.1f}s restarting failed container={c.name} pod={self.pod_name}",
            }
        }

    def _terminated_state(self, c: Container, rc: int) -> dict:
        code = exit_code_of(rc)
        if c.kill_reason:
            reason = c.kill_reason
        elif code == 0:
            reason = "Completed"
        elif code == 137:
            reason = "OOMKilled"  # what the kernel's OOM killer looks like from outside
        else:
            reason = "Error"
        c.kill_reason = None
        message = self._termination_message(c, code)
        state = {
            "exitCode": code,
            "reason": reason,
            "startedAt": c.state.get("running", {}).get("startedAt", now_rfc3339()),
            "finishedAt": now_rfc3339(),
            "containerID": f"process://{c.proc.pid if c.proc else 0}",
        }
        if message:
            state["message"] = message
        return state

    def _termination_message(self, c: Container, code: int) -> str:
        path = self._termination_file(c)
        try:
            message = path.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
        except OSError:
            message = ""
        if not message and code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = self._log_file(c).read_text(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
            message = "\n".join(lines)[-2048:]
        return message

    def _termination_file(self, c: Container) -> Path:
        return self.dir / c.name / "termination-log"

    def _log_file(self, c: Container) -> Path:
        return self.dir / c.name / "container.log"

    def _start(self, c: Container) -> None:
        cdir = self.dir / c.name
        (cdir / "tmp").mkdir(parents=True, exist_ok=True)
        term = ensure_file(self._termination_file(c))
        term.write_bytes(b"")
        try:
            # The downward API's status.podIP/hostIP are known here, before the pod's status
            # is first written (as a kubelet resolves them when it starts the container).
            pod = {**self.pod, "status": {**(self.pod.get("status") or {}), **self.addresses()}}
            env = container_env(pod, c.spec, self.host.base_env(self.pod, self.pod_ip), self.host.secret_values, self.host.config_map_data)
            argv = container_argv(c.spec, env, self.node.image_entrypoints)
        except EnvError as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            c.next_start = time.monotonic() + 2.0
            return
        mounts = [{"source": str(cdir / "tmp"), "target": "/tmp"}]
        mounts.append({"source": str(term), "target": c.spec.get("terminationMessagePath") or "/dev/termination-log"})
        mounts.append({"source": str(self._hosts_file()), "target": "/etc/hosts", "readOnly": True})
        for vm in c.spec.get("volumeMounts") or []:
            src = self.volume_paths.get(vm["name"])
            if src is None:
                c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": f"volume {vm['name']!r} not found"}}
                c.next_start = time.monotonic() + 5.0
                return
            if vm.get("subPath"):
                src = src / vm["subPath"]
                src.mkdir(parents=True, exist_ok=True)
            mounts.append({"source": str(src), "target": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))})
        # The "image" is this machine's Python environment: a mount over one of its parents
        # (a private /tmp when the repo lives in /tmp, a volume at /work) would hide it, so
        # bind it back, read-only, on top.
        for path in self.node.runtime_paths:
            if any(_covers(m["target"], [path]) for m in mounts):
                mounts.append({"source": path, "target": path, "readOnly": True})
        sc = c.spec.get("securityContext") or {}
        spec = {
            "mounts": mounts,
            "readOnlyRoot": bool(sc.get("readOnlyRootFilesystem")),
            "hostname": (self.pod["spec"].get("hostname") or self.pod_name)[:63],
            "workingDir": c.spec.get("workingDir") or "/",
            "argv": argv,
            "env": env,
        }
        spec_file = cdir / "exec.json"
        spec_file.write_text(json.dumps(spec))
        spec_file.chmod(0o600)  # it holds the container's environment, secrets included
        # setpriv: the process dies with this worker thread even if the kubelet is SIGKILLed;
        # unshare: a private mount + UTS namespace, where podexec lays out the container's view.
        unshare = ["setpriv", "--pdeathsig", "KILL", "unshare", "--mount", "--uts", "--propagation", "private"]
        if os.geteuid() != 0:
            unshare[4:4] = ["--user", "--map-root-user"]
        logf = open(self._log_file(c), "ab")
        logf.write(f"--- {now_rfc3339()} start #{c.restart_count}: {' '.join(argv)}\n".encode())
        logf.flush()
        c.proc = subprocess.Popen(
            [*unshare, "--", sys.executable, "-m", "localcluster.podexec", str(spec_file)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(cdir),
        )
        logf.close()
        self.host.track(c.proc.pid)
        c.next_start = None
        c.state = {"running": {"startedAt": now_rfc3339()}}
        log.info("started %s/%s[%s] pid=%s: %s", self.ns, self.pod_name, c.name, c.proc.pid, " ".join(argv))

    # ---- volumes, hosts --------------------------------------------------------------------

    def _setup_volumes(self) -> bool:
        try:
            for vol in self.pod["spec"].get("volumes") or []:
                if vol["name"] not in self.volume_paths:
                    self.volume_paths[vol["name"]] = self.node.volume_builder.build(self.pod, vol, self.dir / "volumes")
        except (VolumeError, EnvError) as e:
            self.waiting_message = f"MountVolume.SetUp failed: {e}"
            for c in self.containers:
                c.state = {"waiting": {"reason": "ContainerCreating", "message": self.waiting_message}}
            return False
        self.waiting_message = ""
        return True

    def _hosts_file(self) -> Path:
        path = self.dir / "hosts"
        if not path.exists():
            self.refresh_hosts()
        return path

    def refresh_hosts(self) -> None:
        """Rewrite in place (a bind-mounted file must keep its inode)."""
        content = self.host.hosts_content(self.ns, self)
        path = self.dir / "hosts"
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as f:
            f.seek(0)
            f.truncate()
            f.write(content)

    # ---- faults, termination ------------------------------------------------------------------

    def _apply_faults(self) -> None:
        with self.lock:
            faults, self.faults = self.faults, []
        for action, container in faults:
            targets = [c for c in self.containers if c.proc and (container is None or c.name == container)]
            for c in targets[:1] if container is None else targets:
                c.kill_reason = "OOMKilled" if action == "oom" else "Error"
                log.info("fault %s on %s/%s[%s]", action, self.ns, self.pod_name, c.name)
                _signal_group(c.proc, signal.SIGKILL)

    def _finish_deletion(self) -> None:
        if self.abandon or self.node.stopping.is_set():
            self._kill_all(signal.SIGKILL)
            return
        grace = self.delete_grace or 0.0
        running = [c for c in self.init_containers + self.containers if c.proc and c.proc.poll() is None]
        for c in running:
            c.kill_reason = "Error"
            _signal_group(c.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(c.proc.poll() is None for c in running) and time.monotonic() < deadline:
            time.sleep(0.1)
        for c in running:
            if c.proc.poll() is None:
                _signal_group(c.proc, signal.SIGKILL)
            rc = c.proc.wait()
            c.state = {"terminated": self._terminated_state(c, rc)}
            c.kill_reason = None
            c.proc = None
        if self.phase not in ("Succeeded", "Failed") and running:
            codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in self.containers]
            self.phase = "Succeeded" if codes and all(code == 0 for code in codes) else "Failed"
        self.report()
        self.host.delete_pod(self.ns, self.pod_name, self.uid)

    def _kill_all(self, sig: int) -> None:
        for c in self.init_containers + self.containers:
            if c.proc and c.proc.poll() is None:
                _signal_group(c.proc, sig)
                try:
                    c.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass

    # ---- status ------------------------------------------------------------------------------

    def addresses(self) -> dict:
        """The pod's and its node's addresses, as its status says them (the node is this machine)."""
        return {"hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": self.pod_ip, "podIPs": [{"ip": self.pod_ip}]}

    def status(self) -> dict:
        ready = self.phase == "Running" and all("running" in c.state for c in self.containers)
        t = now_rfc3339()

        def cond(kind: str, ok: bool, reason: str = "") -> dict:
            d = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None, "lastTransitionTime": t}
            if reason and not ok:
                d["reason"] = reason
            return d

        status = {
            "phase": self.phase,
            **self.addresses(),
            "startTime": self.start_time,
            "conditions": [
                cond("PodReadyToStartContainers", True),
                cond("Initialized", self.initialized, "ContainersNotInitialized"),
                cond("ContainersReady", ready, "ContainersNotReady"),
                cond("Ready", ready, "ContainersNotReady"),
            ],
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        return status

    def report(self) -> None:
        if self.abandon:
            return
        status = self.status()
        comparable = json.dumps(_without_times(status), sort_keys=True)
        if comparable == self._last_status:
            return
        if self.host.patch_pod_status(self, status):
            self._last_status = comparable  # type: ignore[assignment]

    def cleanup(self) -> None:
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)  # secrets do not outlive the pod


def _without_times(status: dict) -> dict:
    s = json.loads(json.dumps(status))
    for c in s["conditions"]:
        c.pop("lastTransitionTime", None)
    return s


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, found through /proc before anything is signalled (an orphan
    is reparented away and cannot be found any more)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_group(proc: subprocess.Popen | None, sig: int) -> None:
    """Signal the container like a runtime signals its cgroup: the process group and every
    descendant, including those that started sessions of their own (torchrun's workers)."""
    if proc is None:
        return
    tree = descendants(proc.pid) if sig == signal.SIGKILL else []
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in tree:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _covers(mount_path: str, paths: list[str]) -> bool:
    mp = os.path.normpath(mount_path)
    return any(p == mp or p.startswith(mp.rstrip("/") + "/") for p in paths)
