//! A real MCP exchange: the PyPI `mcp` SDK client launches PyPI
//! `mcp-server-time` through `mcpguard run` under the shipped policy.

use std::{os::unix::fs::PermissionsExt, os::unix::process::CommandExt, process::Command};

use crate::harness::*;

const CLIENT: &str = r#"
import asyncio, json, sys
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

def field(obj, *names):
    # The SDK's 2.x models use snake_case names; 1.x used camelCase.
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise AttributeError(names)

async def main():
    params = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool("get_current_time", {"timezone": "Europe/Paris"})
            print(json.dumps({
                "server": field(init, "server_info", "serverInfo").name,
                "tools": sorted(t.name for t in tools.tools),
                "is_error": bool(field(result, "is_error", "isError")),
                "text": [c.text for c in result.content if getattr(c, "text", None)],
            }))

asyncio.run(main())
"#;

#[test]
fn the_mcp_sdk_client_talks_to_mcp_server_time_under_its_shipped_policy() {
    let d = Daemon::start();
    let peers = peers();
    let u = user();
    let dir = tempdir("mcp");
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/time.toml"))
        .expect("shipped policies/time.toml");
    let pol = policy(&dir, "time", &shipped);
    let client = dir.join("client.py");
    std::fs::write(&client, CLIENT).unwrap();
    std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o644)).unwrap();

    let venv = peers.join("venv");
    let out = Command::new(venv.join("bin/python"))
        .arg(&client)
        .arg(bin())
        .args(["run", "--socket"])
        .arg(&d.socket)
        .arg("--policy")
        .arg(&pol)
        .arg("--")
        .arg(venv.join("bin/mcp-server-time"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &u.home)
        .current_dir(&dir)
        .uid(u.uid)
        .gid(u.gid)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n--- daemon ---\n{}", describe(&out), d.stderr());
    let line = stdout_of(&out);
    let got: serde_json::Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("client output is not JSON ({e}): {}", describe(&out)));
    assert_eq!(got["server"], "mcp-time", "{got}");
    let tools: Vec<&str> = got["tools"].as_array().unwrap().iter().filter_map(|t| t.as_str()).collect();
    assert!(tools.contains(&"get_current_time") && tools.contains(&"convert_time"), "{got}");
    assert_eq!(got["is_error"], false, "{got}");
    let text = got["text"][0].as_str().unwrap_or_default();
    assert!(text.contains("Europe/Paris"), "tool result should name the timezone: {got}");

    d.wait_record("launch of the time server", |r| is_kind(r, "launch") && r["server"] == "time");
    d.wait_record("exec in the time server", |r| is_kind(r, "exec") && r["server"] == "time");
    d.wait_record("opens by the time server", |r| is_kind(r, "open") && r["server"] == "time");
    d.wait_record("clean exit of the time server", |r| is_kind(r, "server_exit") && r["server"] == "time");
}
