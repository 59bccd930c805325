"""`python -m devtools.baseline`: serve the inline baseline with uvicorn (one worker)."""

from __future__ import annotations

import logging

import uvicorn

from devtools.baseline.app import create_app
from devtools.baseline.settings import BaselineSettings


def main() -> None:
    settings = BaselineSettings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
