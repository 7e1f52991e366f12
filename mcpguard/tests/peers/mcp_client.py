"""A real MCP client (the PyPI `mcp` SDK) for tests and the demo.

Usage: mcp_client.py CALLS -- SERVER_COMMAND [ARGS...]

CALLS is a JSON list of [tool, arguments] pairs. The client starts the
server over stdio, initializes, lists its tools, makes each call in turn and
prints one JSON object: the server's name, its tool names, and per call
whether it was an error, the text parts of its result, or the JSON-RPC
error the call was refused with. It answers the server's own requests as
a client with a model and a user would: a sampling gets a canned reply, an
elicitation is declined, roots are none; the report lists the sampling
prompts and elicitation messages that reached it ("sampled", "elicited").
"""
import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client


def field(obj, *names):
    # The SDK's 2.x models use snake_case names; 1.x used camelCase.
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise AttributeError(names)


SEEN = {"sampled": [], "elicited": []}


async def on_sampling(context, params):
    SEEN["sampled"].extend(getattr(m.content, "text", "") for m in params.messages)
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text="canned model reply"),
        model="test-model",
    )


async def on_elicitation(context, params):
    SEEN["elicited"].append(params.message)
    return types.ElicitResult(action="decline")


async def on_roots(context):
    return types.ListRootsResult(roots=[])


async def main():
    calls = json.loads(sys.argv[1])
    if sys.argv[2] != "--":
        sys.exit(__doc__)
    command = sys.argv[3:]
    # The SDK passes only a few variables to the server by default; hand it
    # ours, as an MCP client configured with an `env` block would.
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    results = []
    async with stdio_client(params) as (read, write):
        async with ClientSession(
            read,
            write,
            sampling_callback=on_sampling,
            elicitation_callback=on_elicitation,
            list_roots_callback=on_roots,
        ) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            for tool, args in calls:
                try:
                    result = await session.call_tool(tool, args)
                except Exception as e:  # a JSON-RPC error reply
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
        **SEEN,
    }))


asyncio.run(main())
