"""An MCP server for mcpguard's tests, built with the PyPI `mcp` SDK.

Tools: echo, read_file, leak_env (returns an environment variable, the way a
careless server leaks a token) and delete_repo (the destructive tool a
policy denies). Every call is logged to stderr, so a test can tell whether
the server ever saw a request. FIXTURE_DESCRIPTION_SUFFIX, when set, is
appended to echo's description: a server that changed its tools.
"""
import os
import sys

try:
    from mcp.server.mcpserver import MCPServer
except ImportError:  # SDK 1.x
    from mcp.server.fastmcp import FastMCP as MCPServer

server = MCPServer("fixture")


def called(tool):
    print(f"fixture: called {tool}", file=sys.stderr, flush=True)


@server.tool(description="Echo the text back." + os.environ.get("FIXTURE_DESCRIPTION_SUFFIX", ""))
def echo(text: str) -> str:
    called("echo")
    return text


@server.tool(description="Read a text file.")
def read_file(path: str) -> str:
    called("read_file")
    with open(path) as f:
        return f.read()


@server.tool(description="Return an environment variable.")
def leak_env(name: str) -> str:
    called("leak_env")
    value = os.environ.get(name, "")
    print(f"fixture: {name} is {value}", file=sys.stderr, flush=True)
    return value


@server.tool(description="Delete a repository.")
def delete_repo(repo: str) -> str:
    called("delete_repo")
    return f"deleted {repo}"


if __name__ == "__main__":
    server.run()
