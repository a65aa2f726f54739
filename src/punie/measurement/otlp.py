"""Opt-in export of the agent's PydanticAI spans to an OpenTelemetry (OTLP/HTTP) collector."""

from __future__ import annotations

from collections.abc import Callable

from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings


def configure_otlp(endpoint: str, service_name: str = "punie-lab") -> Callable[[], None]:
    """Export every agent run's spans (PydanticAI instrumentation) to an OTLP/HTTP endpoint.

    `endpoint` is the collector's base URL (e.g. http://127.0.0.1:4318) or its full
    `/v1/traces` URL. Returns a function that flushes and stops the exporter.
    Needs the `otel` extra: pip install 'punie[otel]'.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise ImportError(
            f"OTLP export needs the otel extra (pip install 'punie[otel]'): {e}"
        ) from None

    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    Agent.instrument_all(InstrumentationSettings(tracer_provider=provider))

    def shutdown() -> None:
        Agent.instrument_all(False)
        provider.force_flush()
        provider.shutdown()

    return shutdown
