"""In-process transport: sites are :class:`SiteNode` objects in this process (threads, or one after
another in the caller's thread with ``workers="sequential"``) or in worker processes
(``workers="processes"``). Every message and reply crosses a dict border (``to_dict`` / ``from_dict``),
exactly as over a network."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from ehr_fed.federation.messages import ProtocolError, Reply, TaskMessage
from ehr_fed.federation.payload import PayloadTypeError
from ehr_fed.federation.site import SiteNode
from ehr_fed.federation.transports.base import SiteFailure


def _reply_from(site_id: str, data) -> Reply | SiteFailure:
    try:
        return Reply.from_dict(data)
    except (ProtocolError, PayloadTypeError) as exc:
        return SiteFailure(site_id, "transport_error", f"malformed reply: {exc}")


#: the ways an in-process transport runs its sites
WORKERS = ("threads", "processes", "sequential")


class InProcessTransport:
    """Sites as local objects.

    Parameters
    ----------
    nodes : dict of site id to SiteNode
    workers : {"threads", "processes", "sequential"}
        ``"processes"`` runs each site in its own worker process (its table is sent once at start);
        ``"sequential"`` answers the sites one after another in the calling thread (no concurrency: each
        site's work is timed as if it had its machine to itself, tracebacks and profiles stay in one thread;
        a timeout is checked after each site, not enforced during one).
    """

    def __init__(self, nodes: Mapping[str, SiteNode], *, workers: str = "threads"):
        if workers not in WORKERS:
            raise ValueError(f"workers must be one of {', '.join(WORKERS)}, got {workers!r}")
        self.nodes = dict(nodes)
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.nodes)), thread_name_prefix="site")
        self._procs: dict[str, tuple] = {}
        if workers == "processes":
            ctx = mp.get_context("spawn")
            for sid, node in self.nodes.items():
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, node), daemon=True, name=f"site-{sid}")
                proc.start()
                child.close()
                self._procs[sid] = (proc, parent)

    def site_ids(self) -> list[str]:
        return list(self.nodes)

    def send(self, messages: Mapping[str, TaskMessage], timeout: float | None) -> dict[str, Reply | SiteFailure]:
        unknown = set(messages) - set(self.nodes)
        if unknown:
            raise KeyError(f"no such site(s) {sorted(unknown)}; sites: {self.site_ids()}")
        if self.workers == "processes":
            return self._send_processes(messages, timeout)
        if self.workers == "sequential":
            return self._send_sequential(messages, timeout)
        futs = {sid: self._pool.submit(self.nodes[sid].handle, msg.to_dict()) for sid, msg in messages.items()}
        futures_wait(list(futs.values()), timeout=timeout)
        out: dict[str, Reply | SiteFailure] = {}
        for sid, fut in futs.items():
            if not fut.done():
                fut.cancel()
                out[sid] = SiteFailure(sid, "timeout", f"no reply within {timeout:g} s")
            elif fut.exception() is not None:
                out[sid] = SiteFailure(sid, "transport_error", repr(fut.exception()))
            else:
                out[sid] = _reply_from(sid, fut.result().to_dict())
        return out

    def _send_sequential(self, messages, timeout):
        out: dict[str, Reply | SiteFailure] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        for sid, msg in messages.items():
            if deadline is not None and time.monotonic() > deadline:
                out[sid] = SiteFailure(sid, "timeout", f"no reply within {timeout:g} s")
                continue
            try:
                reply = self.nodes[sid].handle(msg.to_dict())
            except Exception as exc:  # a site's crash is that site's failure, as with threads
                out[sid] = SiteFailure(sid, "transport_error", repr(exc))
                continue
            out[sid] = _reply_from(sid, reply.to_dict())
        return out

    def _send_processes(self, messages, timeout):
        out: dict[str, Reply | SiteFailure] = {}
        for sid, msg in messages.items():
            proc, conn = self._procs[sid]
            try:
                conn.send(msg.to_dict())
            except (OSError, BrokenPipeError) as exc:
                out[sid] = SiteFailure(sid, "unreachable", f"worker process is gone ({exc})")
        deadline = None if timeout is None else time.monotonic() + timeout
        for sid, msg in messages.items():
            if sid in out:
                continue
            proc, conn = self._procs[sid]
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not conn.poll(left):
                    out[sid] = SiteFailure(sid, "timeout", f"no reply within {timeout:g} s")
                    break
                try:
                    data = conn.recv()
                except EOFError:
                    out[sid] = SiteFailure(sid, "unreachable", "worker process exited")
                    break
                if data.get("nonce") == msg.nonce:  # drop late replies to earlier, timed-out messages
                    out[sid] = _reply_from(sid, data)
                    break
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc, conn in self._procs.values():
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self._procs.clear()


def _worker_main(conn, node: SiteNode) -> None:  # pragma: no cover - runs in the worker process
    while True:
        try:
            data = conn.recv()
        except EOFError:
            return
        if data is None:
            return
        conn.send(node.handle(data).to_dict())
