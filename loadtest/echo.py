"""A trivial WebSocket relay: the load generator's ceiling check (`loadtest.bench --echo`).

`GET /ws?name=NAME` registers a socket under NAME. A text frame `TO\\nFRAME` is relayed verbatim:
FRAME goes to the socket named TO and back to the sender (who takes its own copy as the
confirmation, as a node's `sent`). Frames without a newline (the clients' acks) are dropped. No
JSON work, no storage, no Redis: delivery is in-process, so whatever rate the bench reaches here
is what the load generator itself can drive on this machine.

Run: python -m loadtest.echo --port 9100
"""

from __future__ import annotations

import argparse

from aiohttp import WSMsgType, web

SOCKETS = web.AppKey("sockets", dict)


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    name = request.query.get("name", "")
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets[name] = ws
    await ws.send_str('{"type":"ready"}')
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            to, sep, frame = msg.data.partition("\n")
            if not sep:
                continue
            peer = sockets.get(to)
            if peer is not None and not peer.closed:
                await peer.send_str(frame)
            await ws.send_str(frame)
    finally:
        if sockets.get(name) is ws:
            del sockets[name]
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "node_id": "echo"})


def build_app() -> web.Application:
    app = web.Application()
    app[SOCKETS] = {}
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description="WebSocket relay for the bench's ceiling check")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    a = ap.parse_args()
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = None
    web.run_app(build_app(), host=a.host, port=a.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
