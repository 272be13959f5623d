"""Prometheus metrics, in a registry of the app's own (several apps may share a process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _StateCollector(Collector):
    """Queue depth and loaded models, read when Prometheus scrapes."""

    def __init__(
        self, counts: Callable[[], dict[str, int]], loaded: Callable[[], list[str]]
    ) -> None:
        self.counts = counts
        self.loaded = loaded

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("upres_jobs", "Jobs in the store by state", labels=["state"])
        for state, count in self.counts().items():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily(
            "upres_models_loaded", "Models held in the model cache", value=len(self.loaded())
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "upres_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "upres_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.refusals = Counter(
            "upres_refusals", "4xx answers by error code", ["error"], registry=self.registry
        )
        self.jobs_finished = Counter(
            "upres_jobs_finished", "Jobs that ended, by outcome", ["status"], registry=self.registry
        )
        self.job_seconds = Histogram(
            "upres_job_duration_seconds",
            "Time a worker spent on a job",
            buckets=_SECONDS,
            registry=self.registry,
        )

    def watch_state(
        self, counts: Callable[[], dict[str, int]], loaded: Callable[[], list[str]]
    ) -> None:
        self.registry.register(_StateCollector(counts, loaded))


class MetricsMiddleware:
    """Counts every answer by route template (never by raw path: ids would explode labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = route_label(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def route_label(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return route.path
    return "/static" if scope.get("path", "").startswith("/static/") else "unmatched"
