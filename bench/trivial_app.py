"""The baselines: a trivial Litestar handler, served the way relayhook is; with --front,
the same trivial work as a plain ASGI handler in front of Litestar, the way relayhook
serves /hooks/ (what Python here can answer when nothing is parsed or stored)."""

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


async def front(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"].startswith("/hooks/"):
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"event_id": 1}'})
    else:
        await app(scope, receive, send)


if __name__ == "__main__":
    uvicorn.run(
        front if "--front" in sys.argv else app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
