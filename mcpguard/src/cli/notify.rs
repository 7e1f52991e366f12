//! How `mcpguard run` tells the person that a call of its server waits
//! for a decision: a line on its stderr (the MCP client's log, or the
//! terminal it runs in) and, where one is available, a desktop
//! notification through `notify-send` on the session bus of the user who
//! started it. It runs outside the server's sandbox, as that user.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::{mcp::approve::Why, term};

/// Longest a desktop notification helper may run before it is left alone.
const NOTIFY_WAIT: Duration = Duration::from_secs(5);

/// Call `approval` to `tool` waits for a person.
pub fn held(approval: u64, tool: &str, why: Why, timeout_secs: u64) {
    let tool = term::escape(tool);
    let what = match why {
        Why::Ask => "the policy asks a person for this tool",
        Why::Taint => "the session is tainted by an earlier flagged result",
    };
    eprintln!(
        "mcpguard: call to tool {tool:?} waits for your decision ({what}): \
         `mcpguard approve {approval}` or `mcpguard deny {approval}` within {timeout_secs} s; \
         unanswered, it is refused"
    );
    desktop(
        &format!("mcpguard: approve {tool}?"),
        &format!(
            "{what}.\nmcpguard approve {approval}\nmcpguard deny {approval}\n\
             Refused in {timeout_secs} s if unanswered."
        ),
    );
}

/// A desktop notification, if `notify-send` is installed; never waited
/// for by the caller, and a missing one is no error.
fn desktop(summary: &str, body: &str) {
    let mut cmd = Command::new("notify-send");
    // An MCP client may start its servers without the bus address; the
    // user's session bus is at its well-known place then.
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        let bus = format!("/run/user/{}/bus", nix::unistd::getuid());
        if std::path::Path::new(&bus).exists() {
            cmd.env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={bus}"));
        }
    }
    let spawned = cmd
        .args([
            "--app-name=mcpguard",
            "--urgency=critical",
            "--",
            summary,
            body,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = spawned else {
        return;
    };
    // Reaped off the relay path; one that hangs is killed.
    let _ = std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + NOTIFY_WAIT;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        });
}
