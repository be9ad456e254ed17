"""The baseline: a trivial Litestar handler, served the way relayhook is."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from litestar import Litestar, Request, post


@post("/hooks/{source:str}", status_code=202)
async def receive(request: Request[Any, Any, Any], source: str) -> dict[str, int]:
    await request.body()
    return {"event_id": 1}


app = Litestar([receive], openapi_config=None, logging_config=None)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
