"""Admin jobs (compaction, re-index): run one at a time on a worker thread, polled through a status resource."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from ..errors import AetherError
from ._errors import error_type, status_for
from ._schemas import Job, JobError

log = logging.getLogger("aether.server")
KEEP = 200  # finished jobs remembered (oldest dropped first)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _plain(result: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if isinstance(result, dict):
        return result
    return {"value": result}


class Jobs:
    """Queued admin jobs. Jobs run one at a time: compaction and re-index both rewrite a store's files."""

    def __init__(self, observe: Callable[[str, str, float], None]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aether-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._observe = observe
        self._stopped = False

    def start(self) -> None:
        """A fresh worker after :meth:`shutdown` (an app whose lifespan runs again)."""
        if self._stopped:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aether-job")
            self._stopped = False

    def submit(self, namespace: str, kind: str, fn: Callable[[], Any]) -> Job:
        job = Job(id=uuid.uuid4().hex, namespace=namespace, kind=kind, status="queued", created=_now())
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
        self._pool.submit(self._run, job.id, fn)
        return job.model_copy()

    def _update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._jobs[job_id] = job.model_copy(update=fields)

    def _run(self, job_id: str, fn: Callable[[], Any]) -> None:
        with self._lock:
            kind = self._jobs[job_id].kind
        self._update(job_id, status="running", started=_now())
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            dt = time.perf_counter() - t0
            # An AetherError says what went wrong (and is the caller's to read); anything else is a bug
            # whose text stays in the server log.
            known = isinstance(exc, AetherError) and status_for(exc) != 500
            log.warning("job %s (%s) failed: %s: %s", job_id, kind, type(exc).__name__, exc, exc_info=not known)
            message = str(exc) if known else f"internal error; the server log has the details under job id {job_id}"
            self._update(job_id, status="failed", finished=_now(), seconds=dt,
                         error=JobError(type=error_type(exc) if known else "RemoteError", message=message))
            self._observe(kind, "failed", dt)
            return
        dt = time.perf_counter() - t0
        self._update(job_id, status="succeeded", finished=_now(), seconds=dt, result=_plain(result))
        self._observe(kind, "succeeded", dt)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.model_copy()

    def list(self, namespace: str) -> list[Job]:
        with self._lock:
            return [j.model_copy() for j in self._jobs.values() if j.namespace == namespace]

    def shutdown(self) -> None:
        """Wait for the running job; queued ones are cancelled (marked failed)."""
        with self._lock:
            for jid, job in self._jobs.items():
                if job.status == "queued":
                    self._jobs[jid] = job.model_copy(update={
                        "status": "failed", "finished": _now(),
                        "error": JobError(type="StoreClosedError", message="the server shut down before the job ran"),
                    })
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._stopped = True
