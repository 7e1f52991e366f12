"""A minimal MCP server for `cargo xtask bench`: newline-delimited JSON-RPC
on stdio, one tool (`echo`) that returns its `text` argument.

No SDK on purpose: the bench times the guard's relay and MCP tap, so the
server should add as little of its own as it can.
"""

import json
import sys

TOOLS = [
    {
        "name": "echo",
        "description": "Returns its text argument.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    }
]


def answer(msg):
    method = msg.get("method")
    params = msg.get("params") or {}
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bench-echo", "version": "0"},
        }
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        text = (params.get("arguments") or {}).get("text", "")
        return {"content": [{"type": "text", "text": text}], "isError": False}
    if method == "ping":
        return {}
    return None


def main():
    read = sys.stdin.buffer.readline
    out = sys.stdout.buffer
    while True:
        line = read()
        if not line:
            return
        msg = json.loads(line)
        if "id" not in msg:
            continue
        result = answer(msg)
        if result is None:
            reply = {"jsonrpc": "2.0", "id": msg["id"],
                     "error": {"code": -32601, "message": "method not found"}}
        else:
            reply = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
        out.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
        out.flush()


main()
