//! A minimal MCP client over a server's stdio, for the sections that drive
//! real servers ([`super::tap`], [`super::launch`], [`super::wrapped`]):
//! spawn, `initialize` (timed from spawn to its result), then
//! `notifications/initialized`, requests one at a time, end of input.
//! Newline-delimited JSON-RPC, no SDK, so the client adds next to nothing
//! to what is timed.

use std::{
    io::{BufRead, BufReader, Write},
    process::{ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{readable, Children, ANSWER_TIMEOUT};

const INITIALIZE_PARAMS: &str = r#"{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcpguard-bench","version":"0"}}"#;

pub struct Session {
    kids: Children,
    pub stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
    pub next_id: u64,
    /// The last line read.
    pub line: String,
    /// Milliseconds from spawn to the line answering `initialize`.
    pub init_ms: f64,
}

impl Session {
    /// Spawn `cmd` with piped stdin and stdout, send `initialize`, wait for
    /// its result, then send `notifications/initialized`.
    pub fn start(mut cmd: Command) -> Result<Session> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let start = Instant::now();
        let mut kids = Children::default();
        kids.0.push(
            cmd.spawn()
                .with_context(|| format!("starting the MCP server {:?}", cmd.get_program()))?,
        );
        let stdin = kids.0[0].stdin.take();
        let stdout = BufReader::new(kids.0[0].stdout.take().context("stdout")?);
        let mut s = Session {
            kids,
            stdin,
            stdout,
            next_id: 1,
            line: String::new(),
            init_ms: 0.0,
        };
        s.request("initialize", INITIALIZE_PARAMS)
            .context("waiting for the initialize result")?;
        s.init_ms = start.elapsed().as_secs_f64() * 1e3;
        s.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_string() + "\n")?;
        Ok(s)
    }

    pub fn send(&mut self, line: String) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(line.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Read one line, waiting at most [`ANSWER_TIMEOUT`] for it to start.
    pub fn read_line(&mut self) -> Result<usize> {
        self.line.clear();
        if !self.stdout.buffer().contains(&b'\n') {
            readable(self.stdout.get_ref(), ANSWER_TIMEOUT)?;
        }
        Ok(self.stdout.read_line(&mut self.line)?)
    }

    /// Read one answer and check it is the result for `id`.
    pub fn answer(&mut self, id: u64) -> Result<()> {
        if self.read_line()? == 0 {
            bail!("the server closed its stdout (request {id})");
        }
        if !answers(&self.line, id) || !self.line.contains(r#""result""#) {
            bail!("request {id}: unexpected answer {:?}", self.line);
        }
        Ok(())
    }

    /// Send `method` with `params` (JSON text) and wait for its result,
    /// left in [`Session::line`]; returns the request's id.
    pub fn request(&mut self, method: &str, params: &str) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
                + "\n",
        )?;
        self.answer(id)?;
        Ok(id)
    }

    /// End of input: the server (and `mcpguard run` with it) must exit
    /// within 10 s.
    pub fn close(mut self) -> Result<()> {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.kids.0[0].try_wait()?.is_some() {
                self.kids.0.clear();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("the server did not exit within 10 s of end of input")
    }
}

/// Whether `line` carries `"id":id` (as the last member or not), checked
/// without parsing: the tap section counts answers at full speed.
pub fn answers(line: &str, id: u64) -> bool {
    line.contains(&format!(r#""id":{id},"#)) || line.contains(&format!(r#""id":{id}}}"#))
}

/// Milliseconds from spawning `cmd` to the `initialize` result; the session
/// then ends.
pub fn time_to_initialize(cmd: Command) -> Result<f64> {
    let s = Session::start(cmd)?;
    let ms = s.init_ms;
    s.close()?;
    Ok(ms)
}
