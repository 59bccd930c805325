"""The gateway under several uvicorn workers: `/metrics` counts every worker's requests.

prometheus_client's multiprocess mode (issue 20): `relink gateway` with
RELINK_GATEWAY_WORKERS=3 gives its workers one folder for their figures, and
whichever worker answers `/metrics` merges them, so the count of requests is
the same on every scrape and equals the requests sent (before, each worker
reported only its own share).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.soak.stack import ProcessStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REQUESTS = 60
HEALTHZ = re.compile(
    r'^relink_gateway_http_requests_total\{route="/healthz",status="200"\} (\S+)$', re.M
)


@pytest.fixture
def workers(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[ProcessStack]:
    stack = ProcessStack(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        workdir=tmp_path / "stack",
        names=("provider-sim", "gateway"),
        extra_env={
            "RELINK_GATEWAY_WORKERS": "3",
            "RELINK_GATEWAY_METRICS_DIR": str(tmp_path / "gateway-metrics"),
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def healthz_count(text: str) -> float:
    found = HEALTHZ.findall(text)
    assert len(found) == 1, text[-3000:]
    return float(found[0])


def test_metrics_add_up_every_workers_requests(workers: ProcessStack, tmp_path: Path) -> None:
    # the stack's own wait for /healthz counted some already
    start = healthz_count(httpx.get(f"{workers.gateway_url}/metrics", timeout=10).text)
    for _ in range(REQUESTS):
        # a new connection each time: the kernel hands them to the workers in turn
        assert httpx.get(f"{workers.gateway_url}/healthz", timeout=10).status_code == 200
    for _ in range(6):
        scraped = httpx.get(f"{workers.gateway_url}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert healthz_count(scraped.text) == start + REQUESTS
        assert scraped.text.count('relink_build_info{process="gateway"') == 1
    # the workers wrote their figures where they were told
    assert list((tmp_path / "gateway-metrics").glob("*.db"))
