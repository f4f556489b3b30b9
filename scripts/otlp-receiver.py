"""A real OTLP/HTTP (protobuf) receiver for the telemetry tests: oteltap (PyPI), listening
on every interface (the nodes under test run in other network namespaces), printing one
JSON object per received span or metric data point on stdout, flushed at once:

  {"kind": "span", "name", "trace_id", "span_id", "parent_span_id" (hex, "" for a root),
   "duration_ms", "attributes": {key: value}}
  {"kind": "metric", "name", "value", "attributes": {key: value}}

Usage: python3 otlp-receiver.py PORT   (scripts/install-deps.sh installs oteltap in a venv)
"""

import asyncio
import json
import sys

from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def spans(receiver):
    async for span in receiver.stream_traces():
        emit({
            "kind": "span",
            "name": span.name,
            "trace_id": span.trace_id.hex(),
            "span_id": span.span_id.hex(),
            "parent_span_id": span.parent_span_id.hex(),
            "duration_ms": (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
            "attributes": attributes(span.attributes),
        })


async def metrics(receiver):
    async for metric in receiver.stream_metrics():
        data = getattr(metric, metric.WhichOneof("data"))
        for point in getattr(data, "data_points", []):
            number = point.WhichOneof("value") if hasattr(point, "WhichOneof") else None
            emit({
                "kind": "metric",
                "name": metric.name,
                "value": getattr(point, number) if number else None,
                "attributes": attributes(point.attributes),
            })


async def main(port):
    settings = OtelTapHttpProtobufReceiverSettings(http_port=port, listen_on_all_interfaces=True)
    async with OtelTapHttpProtobufReceiver(settings) as receiver:
        tasks = [asyncio.create_task(spans(receiver)), asyncio.create_task(metrics(receiver))]
        emit({"kind": "listening", "port": port})
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
