"""A Flower federation on this machine: one SuperLink and one SuperNode per site.

This is what the tests, the benchmark and a single-machine pilot use. Every
process is a real Flower or ehr-fed process (``flower-superlink``, Flower's
SuperNode, ``flwr run``, the site service and ClientApp) talking TLS over
loopback, exactly as in a deployment where each hospital runs its processes
and connects outbound to the SuperLink. Each
process is started in its own process group, so :meth:`LoopbackDeployment.close`
also stops the ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp``
processes Flower starts underneath.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ehr_fed.federation.transports.flower_tls import (
    NodeAuthKeys,
    TlsFiles,
    make_loopback_certificates,
    make_supernode_auth_keys,
)

log = logging.getLogger(__name__)

#: name of the SuperLink connection written to the Flower config of a deployment
CONNECTION = "ehrfed"


class FlowerDeploymentError(RuntimeError):
    """A Flower process did not start, or a run failed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_env(flwr_home: Path | None = None) -> dict[str, str]:
    """The environment for Flower processes: this interpreter's scripts first on PATH (Flower
    starts ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def _bin(name: str) -> str:
    """Path of a Flower executable installed beside this Python interpreter."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FlowerDeploymentError(f"{name} not found: install flwr in this environment (pip install flwr)")
    return found


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def args(self) -> list[str]:
        return [str(a) for a in self.popen.args]


@dataclass
class LoopbackDeployment:
    """Start a SuperLink and, per site, the processes a hospital runs, all on loopback.

    Per site (as ``docs/deployment.md`` tells a hospital to run them): the site service
    (``ehr-fed site serve``: the only process holding the site's data and keys), a SuperNode
    (``--isolation process``, authenticated with its own registered key, idle poll
    ``poll_interval``) and the site's long-lived ClientApp (``ehr-fed site clientapp``: runs only
    the FAB of this installed ehr-fed, relays to the site service). The SuperLink serves TLS with
    SuperNode authentication and keeps its state in memory (nothing written to disk).

    Parameters
    ----------
    site_configs : dict of str to path
        A name for each node -> the site YAML its site service loads (the service takes the site id
        from it; the SuperNode's node config holds no path).
    workdir : path, optional
        Where certificates, node keys, logs, replay journals and the Flower home go (a temporary
        folder by default).
    poll_interval : float
        Poll of the SuperNodes (to the SuperLink) and ClientApps (to their SuperNode) while no
        computation is running, in seconds.
    hot_poll : float
        The SuperNodes' poll within ``hot_window`` seconds of their last message (the ClientApps poll
        twice as often: their requests stay on the site's machine).
    register_nodes : bool
        Register every SuperNode's public key with the SuperLink (False: to show that an
        unregistered node is refused).
    """

    site_configs: dict[str, str | Path]
    workdir: Path | None = None
    port: int = 0
    poll_interval: float = 0.5
    hot_poll: float = 0.1
    hot_window: float = 5.0
    register_nodes: bool = True
    tls: TlsFiles | None = None
    _procs: list[_Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="ehrfed-flower-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flwr_home = self.workdir / "flwr-home"
        self.sockets: dict[str, Path] = {}

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> _Proc:
        log_path = self.workdir / f"{name}.log"
        fh = log_path.open("w")
        popen = subprocess.Popen(
            args, stdout=fh, stderr=subprocess.STDOUT, env={**flower_env(self.flwr_home), **(env or {})},
            cwd=self.workdir, start_new_session=True,
        )
        proc = _Proc(name, popen, log_path)
        self._procs.append(proc)
        return proc

    def start(self, timeout: float = 60.0) -> LoopbackDeployment:
        """Start every process and wait until all SuperNodes are registered and connected.

        What does not depend on the SuperLink starts beside it: the site services load their data while
        the SuperLink starts and the node keys are registered, and a ClientApp waits for its SuperNode.
        """
        self.tls = make_loopback_certificates(self.workdir / "tls")
        self.port = self.port or free_port()
        services = self._spawn_site_services()
        self._spawn(
            "superlink",
            [
                _bin("flower-superlink"),
                "--ssl-ca-certfile", str(self.tls.ca_cert),
                "--ssl-certfile", str(self.tls.server_cert),
                "--ssl-keyfile", str(self.tls.server_key),
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
            ],
            env={"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(self.poll_interval)},
        )
        keys = {name: make_supernode_auth_keys(self.workdir / "node-keys", name) for name in self.site_configs}
        self._wait_for_port(self.port, timeout)
        self._write_flwr_config()
        if self.register_nodes:
            self._register([k.public_key for k in keys.values()], timeout)
        for name in self.site_configs:
            self.start_node(name, self.sockets[name], keys=keys[name])
        self._wait_for_site_services(services, timeout)
        self._wait_for_nodes(len(self.site_configs) if self.register_nodes else 0, timeout)
        return self

    def _register(self, public_keys: list[Path], timeout: float) -> None:
        """``flwr supernode register`` every key with the SuperLink (in parallel)."""
        env = flower_env(self.flwr_home)
        procs = [subprocess.Popen([_bin("flwr"), "supernode", "register", str(k), CONNECTION], env=env,
                                  cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for k in public_keys]
        for key, proc in zip(public_keys, procs, strict=True):
            out, _ = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise FlowerDeploymentError(f"flwr supernode register {key} failed:\n{out[-2000:]}")

    def start_node(self, name: str, socket_path: Path, *, keys: NodeAuthKeys | None = None,
                   register: bool = True) -> None:
        """Start a SuperNode (process isolation, authenticated) and the site's ClientApp beside it.

        ``keys``: the node's auth key pair (new, and registered when ``register``, when None).
        """
        if keys is None:
            keys = make_supernode_auth_keys(self.workdir / "node-keys", name)
            if register:
                self._register([keys.public_key], 60.0)
        runtime_port = free_port()
        notify = Path(socket_path).parent / f"{name}.notify"  # beside the site's socket (folder 0700)
        self._spawn(
            f"supernode-{name}",
            [
                sys.executable, "-m", "ehr_fed.federation.transports.flower_supernode",
                "--poll-interval", str(self.poll_interval), "--hot-poll", str(self.hot_poll),
                "--hot-window", str(self.hot_window), "--notify", str(notify), "--",
                "--root-certificates", str(self.tls.ca_cert),
                "--superlink", f"127.0.0.1:{self.port}",
                "--auth-supernode-private-key", str(keys.private_key),
                "--isolation", "process",
                "--host", "127.0.0.1",
                "--port", str(runtime_port),
            ],
        )
        self._spawn(
            f"clientapp-{name}",
            [sys.executable, "-m", "ehr_fed.federation.transports.flower_clientapp",
             "--runtime-api", f"127.0.0.1:{runtime_port}", "--socket", str(socket_path),
             "--poll-interval", str(self.poll_interval / 2), "--hot-poll", str(self.hot_poll / 2),
             "--hot-window", str(self.hot_window), "--notify", str(notify)],
        )

    def processes(self, *names: str) -> list[_Proc]:
        """The started processes with these names (all when none given)."""
        return [p for p in self._procs if not names or p.name in names]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each kind of started process, the processes Flower
        started under it included (``superlink``: also its SuperExec and ServerApp; ``supernode``,
        ``clientapp``, ``site``: summed over the sites). Empty where ``/proc`` is not available."""
        out: dict[str, float] = {}
        if not Path("/proc/self/stat").exists():
            return out
        for proc in self._procs:
            kind = proc.name.split("-", 1)[0]
            out[kind] = out.get(kind, 0.0) + sum(_cpu_of(pid) for pid in _tree(proc.popen.pid))
        return out

    def flwr(self, args: list[str], timeout: float = 60.0) -> str:
        """Run the ``flwr`` CLI against this deployment's SuperLink; returns its output."""
        done = subprocess.run([_bin("flwr"), *args], capture_output=True, text=True, env=flower_env(self.flwr_home),
                              timeout=timeout, cwd=self.workdir)
        if done.returncode != 0:
            raise FlowerDeploymentError(f"flwr {' '.join(args)} failed (exit {done.returncode}):\n"
                                        f"{(done.stdout + done.stderr)[-3000:]}")
        return done.stdout + done.stderr

    def _spawn_site_services(self) -> dict[str, _Proc]:
        """One long-lived site service per node (see :mod:`flower_site`), like a hospital runs."""
        folder = self.workdir / "sockets"
        if len(str(folder)) > 80:  # AF_UNIX paths are limited to ~107 bytes
            folder = Path(tempfile.mkdtemp(prefix="ehrfed-sock-"))
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        self.sockets = {name: folder / f"{name}.sock" for name in self.site_configs}
        return {
            name: self._spawn(
                f"site-{name}",
                [sys.executable, "-m", "ehr_fed.federation.transports.flower_site",
                 str(Path(cfg).resolve()), str(self.sockets[name]), str(self.workdir / "state" / name)],
            )
            for name, cfg in self.site_configs.items()
        }

    def _wait_for_site_services(self, procs: dict[str, _Proc], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name, proc in procs.items():
            while "ready" not in proc.log_path.read_text(errors="replace"):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise FlowerDeploymentError(f"the site service of {name} did not start within {timeout:.0f} s")
                time.sleep(0.1)

    def _write_flwr_config(self) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f"[superlink.{CONNECTION}]\n"
            f'address = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.tls.ca_cert}"\n'
        )

    def _check_alive(self) -> None:
        for proc in self._procs:
            if proc.popen.poll() is not None:
                tail = proc.log_path.read_text(errors="replace")[-2000:]
                raise FlowerDeploymentError(f"{proc.name} exited with code {proc.popen.returncode}:\n{tail}")

    def _wait_for_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise FlowerDeploymentError(f"the SuperLink did not listen on 127.0.0.1:{port} within {timeout:.0f} s")

    def _wait_for_nodes(self, n: int, timeout: float) -> None:
        superlink_log = self.processes("superlink")[0].log_path
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            activated = len(re.findall(r"Activated node_id", superlink_log.read_text(errors="replace")))
            if activated >= n:
                return
            time.sleep(0.3)
        raise FlowerDeploymentError(f"only some of the {n} SuperNodes registered within {timeout:.0f} s")

    # -- runs ---------------------------------------------------------------------------------
    def run(self, app_dir: str | Path, run_config: dict[str, object], timeout: float = 600.0) -> str:
        """``flwr run APP_DIR`` against this SuperLink; returns the streamed log.

        ``run_config`` values must be str, int, float or bool (TOML scalars).
        """
        overrides = " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())
        args = [_bin("flwr"), "run", str(app_dir), CONNECTION, "--stream"]
        if overrides:
            args += ["--run-config", overrides]
        env = flower_env(self.flwr_home)
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=self.workdir)
        output = done.stdout + done.stderr
        (self.workdir / "flwr-run.log").write_text(output)
        if done.returncode != 0:
            raise FlowerDeploymentError(f"flwr run failed (exit {done.returncode}):\n{output[-3000:]}")
        return output

    def close(self, grace: float = 10.0) -> None:
        """Stop every process group that was started, politely then firmly.

        Flower starts ``flower-superexec`` in a session of its own (with the ServerApps under it): the
        groups of every descendant are noted before the first signal and stopped too, so nothing
        outlives a SuperLink that had to be killed; returns when every noted process has exited."""
        own = {os.getpgid(0)}
        groups = []
        descendants = [pid for proc in self._procs for pid in _tree(proc.popen.pid)[1:]]
        leaders = {p.popen.pid for p in self._procs}
        for pid in descendants:
            try:
                group = os.getpgid(pid)
            except OSError:
                continue
            if group not in own and group not in groups and group not in leaders:
                groups.append(group)
        for proc in reversed(self._procs):
            _signal_group(proc.popen, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self._procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self._procs:
            _signal_group(proc.popen, signal.SIGKILL)
            try:
                proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - kernel-level hang
                log.warning("%s (pid %s) did not exit", proc.name, proc.popen.pid)
        for group in groups:  # normally gone already: the SuperLink stops its SuperExec on SIGTERM
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        left = [pid for pid in descendants if _alive(pid)]
        for pid in left:  # one that moved to a group of its own since: by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        # a killed process takes a moment to exit: return only when every one of them is gone
        deadline = time.monotonic() + 5.0
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = [pid for pid in left if _alive(pid)]
        for pid in left:  # pragma: no cover - kernel-level hang
            log.warning("process %s of the deployment did not exit", pid)
        self._procs.clear()

    def __enter__(self) -> LoopbackDeployment:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc``)."""
    out, stack = [], [pid]
    while stack:
        current = stack.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                stack += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has exited: only its parent's wait is left)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
