"""A small MCP server over Streamable HTTP for the tests (the official MCP Python SDK).

Usage: server.py PORT [--host 127.0.0.1] [--token TOKEN]

Serves the MCP endpoint at http://HOST:PORT/mcp and prints one line
`mcp server ready on http://HOST:PORT/mcp` on stdout once it accepts connections.
With --token, every request must carry `Authorization: Bearer TOKEN` (else 401), so a
test can check that headers reach the server.

Tools:
  add(a: int, b: int) -> int     the sum
  echo(text: str) -> str         the text back
  slow(seconds: float) -> str    sleeps, then answers "slept"; for timeouts
  fail(message: str)             raises, so the call is a tool error
  delete_file(path: str) -> str  deletes nothing; meant to sit behind an approval
"""

import argparse
import asyncio
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("switchboard-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Answer the text back."""
    return text


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep for the given number of seconds, then answer."""
    await asyncio.sleep(seconds)
    return "slept"


@server.tool()
def fail(message: str) -> str:
    """Always fail with the given message."""
    raise RuntimeError(message)


@server.tool()
def delete_file(path: str) -> str:
    """Delete a file (a stand-in: nothing is deleted)."""
    return f"deleted {path}"


def with_token(app, token):
    expected = f"Bearer {token}".encode()

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization") != expected:
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"error":"unauthorized"}'})
                return
        await app(scope, receive, send)

    return guarded


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", default=None)
    args = parser.parse_args()

    app = server.streamable_http_app(host=args.host)
    if args.token:
        app = with_token(app, args.token)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    web = uvicorn.Server(config)
    serving = asyncio.create_task(web.serve())
    while not web.started:
        if serving.done():
            serving.result()
            sys.exit(1)
        await asyncio.sleep(0.05)
    print(f"mcp server ready on http://{args.host}:{args.port}/mcp", flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(main())
