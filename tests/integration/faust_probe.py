"""A tiny Faust worker for the client-agreement test: prints what its agent receives.

Run as a subprocess: python faust_probe.py BOOTSTRAP TOPIC DATADIR OUTFILE
(Faust reroutes stdout into its log, so results go to OUTFILE.)
"""

from __future__ import annotations

import json
import sys

import faust


def main() -> None:
    bootstrap, topic_name, datadir, outfile = sys.argv[1:5]
    out = open(outfile, "a", buffering=1)  # noqa: SIM115 - lives as long as the worker
    app = faust.App(
        f"probe-{topic_name}",
        broker=f"kafka://{bootstrap}",
        datadir=datadir,
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

    @app.agent(topic)
    async def probe(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            record = {
                "key": event.key.decode(),
                "partition": event.message.partition,
                "value": event.value.decode(),
            }
            out.write(json.dumps(record) + "\n")

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
