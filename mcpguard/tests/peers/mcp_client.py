"""A real MCP client (the PyPI `mcp` SDK) for tests and the demo.

Usage: mcp_client.py CALLS -- SERVER_COMMAND [ARGS...]
       mcp_client.py CALLS --config CONFIG TABLE SERVER

CALLS is a JSON list of [tool, arguments] pairs. The first form starts the
command with this process's environment. The second starts one server of an
MCP client's config file the way that client would: CONFIG is the file
(JSON, or JSONC as VS Code writes it), TABLE the dotted path of its server
table (`mcpServers`, `servers`, or `projects./home/me/app.mcpServers` for
~/.claude.json) and SERVER the entry's key; its command, args and env are
used as written, on top of the SDK's default environment (HOME, PATH, ...)
as the real clients do. The client starts the server over stdio, initializes, lists its tools, makes each call in turn and
prints one JSON object: the server's name, its tool names, and per call
whether it was an error, the text parts of its result, or the JSON-RPC
error the call was refused with. It answers the server's own requests as
a client with a model and a user would: a sampling gets a canned reply, an
elicitation is declined, roots are none; the report lists the sampling
prompts and elicitation messages that reached it ("sampled", "elicited").

MCP_CLIENT_ELICIT chooses how it treats elicitation: "decline" (the default:
declines every one), "approve" (accepts mcpguard's approval requests, those
whose message starts "mcpguard:", with approve=true, and declines others) or
"none" (does not declare the capability at all, as a client without
elicitation support).
"""
import asyncio
import json
import os
import re
import sys

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import get_default_environment, stdio_client


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


ELICIT = os.environ.get("MCP_CLIENT_ELICIT", "decline")


async def on_elicitation(context, params):
    SEEN["elicited"].append(params.message)
    if params.message.startswith("mcpguard:"):
        if ELICIT == "approve":
            return types.ElicitResult(action="accept", content={"approve": True})
    return types.ElicitResult(action="decline")


async def on_roots(context):
    return types.ListRootsResult(roots=[])


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


def config_entry(config, table_path, server):
    with open(config) as f:
        doc = json.loads(strip_jsonc(f.read()))
    if table_path.startswith("projects."):
        project, rest = table_path[len("projects."):].rsplit(".", 1)
        table = doc["projects"][project][rest]
    else:
        table = doc[table_path]
    entry = table[server]
    env = get_default_environment()
    # Tests run their own daemon; a real one listens where `run` looks.
    if "MCPGUARD_SOCKET" in os.environ:
        env["MCPGUARD_SOCKET"] = os.environ["MCPGUARD_SOCKET"]
    env.update(entry.get("env", {}))
    return StdioServerParameters(command=entry["command"], args=entry.get("args", []), env=env)


def server_params(argv):
    if argv[:1] == ["--config"] and len(argv) == 4:
        return config_entry(*argv[1:])
    if argv[:1] != ["--"] or len(argv) < 2:
        sys.exit(__doc__)
    command = argv[1:]
    # The SDK passes only a few variables to the server by default; hand it
    # ours, as an MCP client configured with an `env` block would.
    return StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))


async def main():
    calls = json.loads(sys.argv[1])
    params = server_params(sys.argv[2:])
    results = []
    async with stdio_client(params) as (read, write):
        async with ClientSession(
            read,
            write,
            sampling_callback=on_sampling,
            elicitation_callback=None if ELICIT == "none" else on_elicitation,
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
