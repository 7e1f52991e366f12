"""Drives one server of an MCP client config file the way the client would.

Usage: client_config.py CONFIG TABLE SERVER CALLS

CONFIG is the client's config file (JSON, or JSONC as VS Code writes it),
TABLE the dotted path of its server table (`mcpServers`, `servers`, or
`projects./home/me/app.mcpServers` for ~/.claude.json), SERVER the entry's
key and CALLS a JSON list of [tool, arguments] pairs. The entry's command,
args and env are used as written; like the real clients, the server gets
the SDK's default environment (HOME, PATH, ...) plus the entry's `env`.
Prints one JSON object: server name, tool names, and per call whether it
was an error and the text of its result (or the JSON-RPC error).
"""
import asyncio
import json
import os
import re
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client


def strip_jsonc(text):
    # Comments and trailing commas, outside strings.
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif text.startswith("/*", i):
            i = text.find("*/", i) + 2
        else:
            out.append(c)
            i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def table(doc, path):
    if path.startswith("projects."):
        project, rest = path[len("projects."):].rsplit(".", 1)
        return doc["projects"][project][rest]
    return doc[path]


def field(obj, *names):
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise AttributeError(names)


async def main():
    config, table_path, server, calls = sys.argv[1:5]
    with open(config) as f:
        entry = table(json.loads(strip_jsonc(f.read())), table_path)[server]
    env = get_default_environment()
    # Tests run their own daemon; a real one listens where `run` looks.
    if "MCPGUARD_SOCKET" in os.environ:
        env["MCPGUARD_SOCKET"] = os.environ["MCPGUARD_SOCKET"]
    env.update(entry.get("env", {}))
    params = StdioServerParameters(command=entry["command"], args=entry.get("args", []), env=env)
    results = []
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            for tool, args in json.loads(calls):
                try:
                    result = await session.call_tool(tool, args)
                except Exception as e:
                    results.append({"refused": str(e)})
                    continue
                results.append({
                    "is_error": bool(field(result, "is_error", "isError")),
                    "text": [c.text for c in result.content if getattr(c, "text", None)],
                })
    print(json.dumps({
        "server": field(init, "server_info", "serverInfo").name,
        "tools": sorted(t.name for t in tools.tools),
        "results": results,
    }))


asyncio.run(main())
