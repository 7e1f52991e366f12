"""A real MCP client (the PyPI `mcp` SDK) for tests and the demo.

Usage: mcp_client.py TOOL JSON_ARGS -- SERVER_COMMAND [ARGS...]

Starts the server over stdio, initializes, lists its tools, calls TOOL with
JSON_ARGS and prints one JSON object: server name, tool names, whether the
call was an error, and the text parts of its result.
"""
import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def field(obj, *names):
    # The SDK's 2.x models use snake_case names; 1.x used camelCase.
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise AttributeError(names)


async def main():
    tool, args = sys.argv[1], json.loads(sys.argv[2])
    if sys.argv[3] != "--":
        sys.exit(__doc__)
    command = sys.argv[4:]
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool(tool, args)
            print(json.dumps({
                "server": field(init, "server_info", "serverInfo").name,
                "tools": sorted(t.name for t in tools.tools),
                "is_error": bool(field(result, "is_error", "isError")),
                "text": [c.text for c in result.content if getattr(c, "text", None)],
            }))


asyncio.run(main())
