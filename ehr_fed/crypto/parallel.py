"""Raw encryption of packed plaintexts (in-process or over worker processes) and parallel decryption.

Decryption runs in threads of this process (the exponentiations release the GIL, see
:mod:`.decryption`), so the private key never leaves the process. For encryption, each worker process
keeps its own :class:`ObfuscatorPool` per key (its own private DJN base and tables, built once per
process), so only plaintexts and ciphertexts cross process boundaries. Workers are started
with the ``forkserver`` method (safe in multi-threaded programs such as a Flower client), kept for reuse and
shut down at interpreter exit or by :func:`shutdown_workers`.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import gmpy2
from phe import paillier

from .obfuscation import ObfuscatorPool, default_pool

__all__ = [
    "raw_encrypt_plaintexts", "raw_decrypt_parallel", "resolve_workers", "shutdown_workers", "map_in_threads",
    "thread_workers",
    "PARALLEL_MIN_CIPHERTEXTS", "PARALLEL_MIN_DECRYPTIONS",
]

#: with ``workers=None``, vectors of at least this many ciphertexts (about a second of work in one process
#: with a 2048-bit key; 280,000 values) are encrypted in worker processes; shorter ones are not worth the
#: start-up of the workers (process start, imports and their own DJN tables: 1-3 s the first time)
PARALLEL_MIN_CIPHERTEXTS = 8192
#: with ``workers=None``, at most this many processes
MAX_AUTO_WORKERS = 8

_EXECUTORS: dict[int, ProcessPoolExecutor] = {}
_EXECUTORS_LOCK = threading.Lock()


def resolve_workers(workers: int | None, n_ciphertexts: int) -> int:
    """Number of processes to use for ``n_ciphertexts`` ciphertexts (1 = in this process)."""
    if workers is None:
        cores = os.cpu_count() or 1
        if n_ciphertexts < PARALLEL_MIN_CIPHERTEXTS or cores < 2:
            return 1
        return min(cores, MAX_AUTO_WORKERS)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be None or an int >= 1, got {workers!r}")
    return max(1, min(workers, n_ciphertexts))


def raw_encrypt_with(public_key, plaintexts: list[int], obfuscators: list) -> list:
    """``c = (1 + n m) * rho mod n**2`` for plaintexts ``0 <= m < n`` (unchecked) and obfuscators ``rho``."""
    n = gmpy2.mpz(public_key.n)
    nsquare = n * n
    return [(n * m + 1) * rho % nsquare for m, rho in zip(plaintexts, obfuscators, strict=True)]


def _worker_encrypt(n: int, plaintexts: list[int]) -> list[int]:
    """Worker-process entry point: encrypt with this process's pool for the key ``n``."""
    public_key = paillier.PaillierPublicKey(n)
    obfuscators = default_pool(public_key, upcoming=len(plaintexts)).take(len(plaintexts))
    return [
        c.to_bytes(-(-c.bit_length() // 8), "big")
        for c in raw_encrypt_with(public_key, plaintexts, obfuscators)
    ]


def _executor(workers: int) -> ProcessPoolExecutor:
    with _EXECUTORS_LOCK:
        executor = _EXECUTORS.get(workers)
        if executor is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            executor = _EXECUTORS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        return executor


def shutdown_workers() -> None:
    """Stop the worker processes started for parallel encryption (they restart on demand)."""
    with _EXECUTORS_LOCK:
        executors = list(_EXECUTORS.values())
        _EXECUTORS.clear()
    for executor in executors:
        executor.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_workers)


def raw_encrypt_plaintexts(
    public_key, plaintexts: list[int], *, pool: ObfuscatorPool, workers: int | None = None
) -> list:
    """Encrypt raw plaintexts ``0 <= m < n`` (unchecked), using the pool's stock first, then processes."""
    count = len(plaintexts)
    in_stock = min(len(pool), count)
    n_workers = resolve_workers(workers, count - in_stock)
    if n_workers == 1:
        return raw_encrypt_with(public_key, plaintexts, pool.take(count))
    head = raw_encrypt_with(public_key, plaintexts[:in_stock], pool.take(in_stock))
    rest = plaintexts[in_stock:]
    size = -(-len(rest) // n_workers)
    chunks = [rest[i : i + size] for i in range(0, len(rest), size)]
    executor = _executor(n_workers)
    futures = [
        executor.submit(_worker_encrypt, int(public_key.n), [int(m) for m in chunk]) for chunk in chunks
    ]
    out = list(head)
    for future in futures:
        out.extend(gmpy2.mpz.from_bytes(c, "big") for c in future.result())
    return out


#: with ``workers=None``, aggregated vectors of at least this many ciphertexts are decrypted by several threads
PARALLEL_MIN_DECRYPTIONS = 16

_THREADS: dict[int, ThreadPoolExecutor] = {}


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    with _EXECUTORS_LOCK:
        pool = _THREADS.get(workers)
        if pool is None:
            pool = _THREADS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ehrfed-decrypt")
        return pool


def thread_workers(workers: int | None, count: int) -> int:
    """Threads to use for ``count`` GIL-free exponentiations (``None``: one per core, at most
    ``MAX_AUTO_WORKERS``, for at least ``PARALLEL_MIN_DECRYPTIONS`` items, else 1)."""
    if workers is None:
        cpus = os.cpu_count() or 1
        workers = min(MAX_AUTO_WORKERS, cpus) if count >= PARALLEL_MIN_DECRYPTIONS and cpus > 1 else 1
    return resolve_workers(workers, count) if count else 1


def map_in_threads(fn, items: list, workers: int | None = None) -> list:
    """``fn(items)`` computed as ``fn`` of consecutive chunks over threads of this process, concatenated.

    ``fn`` maps a list to a list of the same length and should release the GIL (``gmpy2.powmod_base_list``
    does); ``workers`` as in :func:`thread_workers`.
    """
    count = len(items)
    n_workers = thread_workers(workers, count)
    if n_workers == 1:
        return list(fn(items))
    size = -(-count // n_workers)
    chunks = [list(items[i : i + size]) for i in range(0, count, size)]
    out: list = []
    for part in _thread_pool(n_workers).map(fn, chunks):
        out.extend(part)
    return out


def raw_decrypt_parallel(private_key, ciphertexts: list, workers: int | None = None) -> list:
    """CRT-decrypt raw ciphertexts, in chunks over ``workers`` threads of this process.

    ``workers=None``: one thread per core (at most ``MAX_AUTO_WORKERS``) for at least
    ``PARALLEL_MIN_DECRYPTIONS`` ciphertexts, else the calling thread.
    """
    from .decryption import raw_decrypt_crt

    return map_in_threads(lambda chunk: raw_decrypt_crt(private_key, chunk), ciphertexts, workers)
