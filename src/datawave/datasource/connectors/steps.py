"""Named, timed steps for connection tests.

Each step runs a blocking callable in a worker thread under its own timeout. The first failing
step marks the rest ``skipped``: a report says exactly which privilege or hop is missing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from datawave.datasource.errors import ConnectorError, ConnectorTimeout, redact
from datawave.datasource.models import StepResult, StepStatus, TestReport

__all__ = ["StepRunner"]

T = TypeVar("T")


class StepRunner:
    def __init__(
        self,
        *,
        timeout_s: float,
        secrets: Iterable[str] = (),
        translate: Callable[[BaseException], ConnectorError] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._secrets = [s for s in secrets if s]
        self._translate = translate
        self.steps: list[StepResult] = []
        self._started = time.perf_counter()

    @property
    def failed(self) -> bool:
        return any(s.status in (StepStatus.FAILED, StepStatus.TIMEOUT) for s in self.steps)

    async def run(
        self,
        name: str,
        fn: Callable[[], T],
        *,
        timeout_s: float | None = None,
        detail: Callable[[T], dict[str, Any]] | None = None,
    ) -> T | None:
        """Run ``fn`` in a thread as step ``name``; ``None`` when skipped or failed."""
        if self.failed:
            self.steps.append(StepResult(name=name, status=StepStatus.SKIPPED, duration_ms=0.0))
            return None
        limit = timeout_s or self.timeout_s
        t0 = time.perf_counter()
        try:
            value = await asyncio.wait_for(asyncio.to_thread(fn), timeout=limit)
        except (TimeoutError, ConnectorTimeout) as exc:
            msg = str(exc) if isinstance(exc, ConnectorTimeout) else f"timed out after {limit:g}s"
            self._add(name, StepStatus.TIMEOUT, t0, redact(msg, self._secrets), "connector_timeout")
            return None
        except Exception as exc:
            err = exc if isinstance(exc, ConnectorError) or self._translate is None else None
            err = err or (self._translate(exc) if self._translate else exc)
            code = getattr(err, "code", "connector_error")
            self._add(name, StepStatus.FAILED, t0, redact(str(err), self._secrets), code)
            return None
        self._add(name, StepStatus.OK, t0, None, None, detail(value) if detail else {})
        return value

    def _add(
        self,
        name: str,
        status: StepStatus,
        t0: float,
        error: str | None,
        code: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.steps.append(
            StepResult(
                name=name,
                status=status,
                duration_ms=round((time.perf_counter() - t0) * 1000, 3),
                error=error,
                error_code=code,
                detail=detail or {},
            )
        )

    def report(self) -> TestReport:
        return TestReport(
            ok=not self.failed,
            duration_ms=round((time.perf_counter() - self._started) * 1000, 3),
            steps=self.steps,
        )
