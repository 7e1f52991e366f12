#!/usr/bin/env python3
"""mcpguard under systemd: the installed unit's lifecycle, step by step.

Run as root in a machine (a VM guest) whose PID 1 is systemd and where
mcpguard is not installed yet:

    python3 mcpguard/tests/systemd/lifecycle.py target/debug/mcpguard

It installs the binary (`mcpguard install`), starts the unit, drives a
guarded MCP server with the real MCP client as the unprivileged user
mcpguard-test (`MCPGUARD_TEST_USER`), and checks Type=notify readiness,
the Delegate=yes cgroup layout, the journal's fields, reload (SIGHUP),
stop and restart with a server running. Each step prints one line,
`SYSTEMD-TEST PASS <step>: ...` or `SYSTEMD-TEST FAIL <step>: ...`, and the
last line is `SYSTEMD-TEST VERDICT PASS|FAIL (...)`; the exit status is 0
only if every step passed. Diagnostics go to stderr as `SYSTEMD-TEST | ...`.

Needs: the user mcpguard-test with the MCP peers `cargo xtask setup`
installs (~/.local/share/mcpguard/venv, Python with the `mcp` SDK), and no
network. It changes the machine (installs mcpguard, enables the unit): run
it in a throwaway guest, not on a workstation.
"""
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

MARK = "SYSTEMD-TEST"
UNIT = "mcpguard.service"
BIN = Path("/usr/local/bin/mcpguard")
SOCK = Path("/run/mcpguard/mcpguard.sock")
LOG = Path("/var/log/mcpguard/audit.jsonl")
STATE = Path("/var/lib/mcpguard")
PIN_DIR = Path("/sys/fs/bpf/mcpguard/mcpguard")
# The cgroup v2 mount: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid
# system (systemd.unified_cgroup_hierarchy=0).
CGROOT = next(
    Path(line.split()[1]) for line in Path("/proc/mounts").read_text().splitlines()
    if line.split()[2] == "cgroup2"
)
PEERS_SRC = Path(__file__).resolve().parent.parent / "peers"
WORK = Path("/tmp/mcpguard-systemd-test")
POLICY_NAME = "systemd-test"
# A guarded launch, Python's start and the SDK's imports under QEMU/TCG.
SLOW = 180


class Fail(Exception):
    """A step's assertion did not hold."""


def check(cond, what):
    if not cond:
        raise Fail(what)


def say(line):
    print(f"{MARK} {line}", flush=True)


def diag(text):
    for line in str(text).splitlines():
        print(f"{MARK} | {line}", file=sys.stderr, flush=True)


def sh(*argv, ok=True, timeout=SLOW):
    """Run argv; with ok, a non-zero exit fails the step."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if ok and p.returncode != 0:
        raise Fail(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()[-400:]}")
    return p


def show(*props):
    out = sh("systemctl", "show", UNIT, *[f"--property={p}" for p in props]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def main_pid():
    return int(show("MainPID")["MainPID"])


def is_active():
    return sh("systemctl", "is-active", UNIT, ok=False).stdout.strip()


def wait_for(what, pred, within=SLOW, every=0.2):
    end = time.monotonic() + within
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > end:
            raise Fail(f"timed out after {within} s waiting for {what}")
        time.sleep(every)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def records():
    out = []
    for path in (LOG.with_name(LOG.name + ".1"), LOG):
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def journal(since_cursor=None):
    argv = ["journalctl", "-u", UNIT, "-o", "json", "--no-pager"]
    if since_cursor:
        argv += ["--after-cursor", since_cursor]
    out = sh(*argv).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def journal_cursor():
    out = sh("journalctl", "-n", "1", "-o", "json", "--no-pager").stdout.strip()
    return json.loads(out.splitlines()[-1])["__CURSOR"] if out else None


class User:
    def __init__(self, name):
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)
        self.peers = self.home / ".local/share/mcpguard"
        self.python = self.peers / "venv/bin/python"

    def env(self):
        return {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
        }

    def popen(self, argv, out, err):
        return subprocess.Popen(
            argv,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env=self.env(),
            cwd=WORK,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )


class Session:
    """The MCP SDK client driving the fixture server through `mcpguard run`:
    echo, then a `run` call that blocks until the test opens its gate, then
    echo again. While it blocks, the server is running."""

    count = 0

    def __init__(self, user, policy):
        Session.count += 1
        self.tag = f"s{Session.count}"
        self.gate = WORK / f"gate-{self.tag}"
        self.gate.mkdir()
        os.chown(self.gate, user.uid, user.gid)
        self.out = WORK / f"{self.tag}.out"
        self.err = WORK / f"{self.tag}.err"
        wait = f"until [ -e {self.gate}/go ]; do sleep 0.2; done; echo resumed"
        calls = [
            ["echo", {"text": f"before-{self.tag}"}],
            ["run", {"argv": ["/bin/sh", "-c", wait]}],
            ["echo", {"text": f"after-{self.tag}"}],
        ]
        argv = [
            str(user.python), str(PEERS_SRC / "mcp_client.py"), json.dumps(calls), "--",
            str(BIN), "run", "--policy", str(policy), "--",
            str(user.python), str(PEERS_SRC / "fixture_server.py"),
        ]
        self.launches_before = len(launches())
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.client = user.popen(argv, out, err)
        self.server = None

    def blocked(self):
        """Wait until the server sits in the gated call; its pid."""
        def gate_pid():
            for pid in pids():
                if cmdline(pid).startswith(f"/bin/sh -c until [ -e {self.gate}/go ]"):
                    return pid
            if self.client.poll() is not None:
                raise Fail(f"client exited {self.client.returncode}: {self.stderr()[-600:]}")
            return None
        waiter = wait_for(f"session {self.tag} to reach its gated call", gate_pid)
        self.server = ppid(waiter)
        check("fixture_server.py" in cmdline(self.server),
              f"the gate's parent {self.server} is not the server: {cmdline(self.server)!r}")
        return self.server

    def open_gate(self):
        (self.gate / "go").touch()

    def finish(self, within=SLOW):
        try:
            self.client.wait(within)
        except subprocess.TimeoutExpired:
            self.client.kill()
            raise Fail(f"client {self.tag} still running after {within} s")
        return self.client.returncode

    def report(self):
        text = self.out.read_text()
        try:
            return json.loads(text)
        except ValueError:
            raise Fail(f"client {self.tag} printed no report: {text[-300:]!r} {self.stderr()[-600:]}")

    def stderr(self):
        return self.err.read_text() if self.err.exists() else ""

    def launch(self):
        """The launch record of this session's server: the first launch of
        the test policy after the session started (sessions run one at a
        time)."""
        new = launches()[self.launches_before:]
        return new[0] if new else None


def launches():
    return [r for r in records() if r.get("kind") == "launch" and r.get("server") == POLICY_NAME]


def pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ppid(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cgroup_of(pid):
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise Fail(f"/proc/{pid}/cgroup has no cgroup v2 line")


def write_policy(user):
    """A small policy for the fixture server: Python, the peers, the gate."""
    read = ["/usr", "/lib", "/lib64", str(PEERS_SRC), str(user.peers), str(WORK)]
    text = (
        f'name = "{POLICY_NAME}"\n'
        "[filesystem]\n"
        f"read = {json.dumps(read)}\n"
        'write = ["/dev/null"]\n'
        'exec = ["/usr/bin", "/usr/lib", "/lib", "/lib64", "/bin"]\n'
        "[env]\n"
        'pass = ["PATH", "HOME"]\n'
        # The lifecycle, not the scopes, is under test: before Landlock
        # ABI 6 (Debian 12's 6.1) a launch is refused without this.
        "[kernel]\n"
        'accept_weaker = ["scope.signal", "scope.abstract_unix_socket"]\n'
    )
    path = WORK / f"{POLICY_NAME}.toml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def diag_journal():
    """The unit's last journal entries, with the daemon's own fields."""
    try:
        entries = journal()[-40:]
    except Exception as e:  # diagnostics must not hide the failure
        diag(f"journal unreadable: {e}")
        return
    for e in entries:
        fields = " ".join(f"{k[9:].lower()}={v}" for k, v in e.items() if k.startswith("MCPGUARD_"))
        diag(f"{e.get('_PID', '?')}: {e.get('MESSAGE', '')} {fields}")


# ---------------------------------------------------------------- the steps


def step_install(ctx):
    p = sh(str(ctx["exe"]), "install")
    unit = Path("/etc/systemd/system") / UNIT
    check(unit.exists(), f"{unit} not written")
    check(f"ExecStart={BIN} daemon" in unit.read_text(), f"{unit} does not run {BIN}")
    sh("systemctl", "daemon-reload")
    t0 = time.monotonic()
    sh("systemctl", "enable", "--now", UNIT)
    ctx["start_s"] = time.monotonic() - t0
    check(is_active() == "active", f"is-active says {is_active()}")
    return f"install wrote {len(p.stdout.splitlines())} paths; enable --now took {ctx['start_s']:.1f} s"


def step_notify(ctx):
    props = show("Type", "NotifyAccess", "StatusText", "MainPID", "ActiveState")
    check(props["Type"] == "notify", f"Type={props['Type']}")
    check(props["ActiveState"] == "active", f"ActiveState={props['ActiveState']}")
    # `systemctl start` of a Type=notify unit returns once READY=1 came: the
    # socket must accept connections by then.
    status = subprocess.run(
        [str(BIN), "status"], user=ctx["user"].uid, group=ctx["user"].gid, extra_groups=[],
        env=ctx["user"].env(), cwd="/", capture_output=True, text=True, timeout=60,
    )
    check(status.returncode == 0, f"`mcpguard status` as {ctx['user'].name} right after start: "
          f"exit {status.returncode}: {status.stderr.strip()[-300:]}")
    check(props["StatusText"].startswith(f"listening on {SOCK}"), f"StatusText={props['StatusText']!r}")
    # READY=1 only after the socket listens: the daemon's "ready" line comes
    # before systemd's "Started" (MESSAGE_ID of a started unit).
    entries = journal()
    pid = props["MainPID"]
    order = [
        e.get("MESSAGE", "") for e in entries
        if (e.get("_PID") == pid and "daemon ready" in e.get("MESSAGE", ""))
        or e.get("MESSAGE_ID") == "39f53479d3a045ac8e11786248231fbf"
    ]
    check(len(order) >= 2 and "daemon ready" in order[0],
          f"journal order of ready/started: {order}")
    return f"active only after READY=1 (StatusText {props['StatusText']!r})"


def step_session(ctx):
    user = ctx["user"]
    ctx["policy"] = write_policy(user)
    s = Session(user, ctx["policy"])
    ctx["s1"] = s
    server = s.blocked()
    check("fixture: called echo" in s.stderr(), "the server never logged its first echo")
    return f"MCP client -> mcpguard run -> fixture server pid {server} as {user.name}, in its gated call"


def step_cgroup(ctx):
    s = ctx["s1"]
    unit_cg = show("ControlGroup")["ControlGroup"]
    check(unit_cg == "/system.slice/mcpguard.service", f"ControlGroup={unit_cg}")
    server_cg = cgroup_of(s.server)
    check(server_cg.startswith(unit_cg + "/"), f"server cgroup {server_cg} not below {unit_cg}")
    daemon_cg = cgroup_of(main_pid())
    check(daemon_cg.startswith(unit_cg), f"daemon cgroup {daemon_cg}")
    check(daemon_cg != server_cg, "server shares the daemon's cgroup")
    delegated = os.getxattr(CGROOT / unit_cg.lstrip("/"), "trusted.delegate")
    check(delegated.strip() == b"1", f"trusted.delegate={delegated!r}")
    tree = sh("systemd-cgls", "--no-pager", "-u", UNIT).stdout
    check(str(s.server) in tree, f"systemd-cgls -u {UNIT} does not list {s.server}:\n{tree}")
    s.launch_rec = wait_for("the launch record", s.launch, within=10)
    check(s.launch_rec.get("cgroup", "").endswith(server_cg.rsplit("/", 1)[-1]),
          f"launch record cgroup {s.launch_rec.get('cgroup')} vs {server_cg}")
    return f"daemon in {daemon_cg}, server in {server_cg} (cgroup2 at {CGROOT})"


def step_journal(ctx):
    launch = ctx["s1"].launch_rec["launch"]
    entries = journal()
    check(any(e.get("SYSLOG_IDENTIFIER") == "mcpguard" for e in entries), "no SYSLOG_IDENTIFIER=mcpguard")
    fields = sorted({k for e in entries for k in e if k.startswith("MCPGUARD_")})
    ours = [e for e in entries if e.get("MCPGUARD_LAUNCH") == launch]
    check(ours, f"no journal entry with MCPGUARD_LAUNCH={launch}; MCPGUARD_ fields seen: {fields}")
    return f"MCPGUARD_LAUNCH={launch} on {len(ours)} entries; fields {', '.join(fields[:8])}"


def step_reload(ctx):
    s = ctx["s1"]
    pid = main_pid()
    rotated = LOG.with_name(LOG.name + ".1")
    check(not rotated.exists(), f"{rotated} exists already")
    cursor = journal_cursor()
    os.rename(LOG, rotated)
    sh("systemctl", "reload", UNIT)
    wait_for("the SIGHUP line in the journal", lambda: any(
        "SIGHUP: reopening the audit log" in e.get("MESSAGE", "") for e in journal(cursor)), within=30)
    wait_for(f"a new {LOG}", LOG.exists, within=30)
    check(main_pid() == pid, f"MainPID {pid} -> {main_pid()}")
    check(is_active() == "active", f"is-active says {is_active()}")
    check(alive(s.server), f"server {s.server} died on reload")
    s.open_gate()
    rc = s.finish()
    report = s.report()
    res = report.get("results", [])
    check(rc == 0, f"client exited {rc}: {s.stderr()[-600:]}")
    check(len(res) == 3 and res[1].get("text") == ["resumed\n"] and res[2].get("text") == [f"after-{s.tag}"],
          f"results {res}")
    verify = sh(str(BIN), "audit", "verify", ok=False)
    check(verify.returncode == 0, f"audit verify: {verify.stdout}{verify.stderr}")
    return f"same daemon pid {pid}, log reopened, session finished its calls after the reload; {verify.stdout.strip()}"


def kill_check(s, what):
    """After `what`, the server is gone and its client has ended."""
    wait_for(f"server {s.server} to die after {what}", lambda: not alive(s.server), within=60)
    s.finish(within=60)
    return s.client.returncode


def step_stop(ctx):
    user = ctx["user"]
    s = Session(user, ctx["policy"])
    server = s.blocked()
    launch = wait_for("the launch record", s.launch, within=10)["launch"]
    check(PIN_DIR.is_dir(), f"{PIN_DIR} missing while the daemon runs")
    t0 = time.monotonic()
    sh("systemctl", "stop", UNIT)
    took = time.monotonic() - t0
    props = show("ActiveState", "Result")
    check(props["ActiveState"] == "inactive", f"ActiveState={props['ActiveState']}")
    check(props["Result"] == "success", f"Result={props['Result']} (killed or timed out, not a clean exit)")
    rc = kill_check(s, "stop")
    check(not (CGROOT / "system.slice/mcpguard.service").exists(), "the unit's cgroup is still there")
    recs = records()
    exits = [r for r in recs if r.get("kind") == "server_exit" and r.get("launch") == launch]
    check(exits, f"no server_exit record for {launch}")
    check(recs and recs[-1].get("kind") == "daemon" and recs[-1].get("event") == "stop",
          f"last record is {recs[-1] if recs else None}")
    verify = sh(str(BIN), "audit", "verify", ok=False)
    check(verify.returncode == 0, f"audit verify: {verify.stdout}{verify.stderr}")
    check(not PIN_DIR.exists(), f"{PIN_DIR} left after a clean stop")
    # Tool pins are state: they outlive the daemon (README: to approve a
    # changed tool, delete its pin file).
    pin = STATE / "pins" / str(user.uid) / f"{POLICY_NAME}.json"
    check(pin.is_file(), f"{pin} not kept")
    return (f"stop took {took:.1f} s; server {server} killed ({exits[0].get('signal') or exits[0].get('exit_code')}),"
            f" client exit {rc}; trail ends in server_exit + daemon stop, chain intact;"
            f" bpffs pins removed, tool pins kept ({pin})")


def step_restart(ctx):
    user = ctx["user"]
    sh("systemctl", "start", UNIT)
    s = Session(user, ctx["policy"])
    server = s.blocked()
    launch = wait_for("the launch record", s.launch, within=10)["launch"]
    old = main_pid()
    t0 = time.monotonic()
    sh("systemctl", "restart", UNIT)
    took = time.monotonic() - t0
    new = main_pid()
    check(is_active() == "active" and new not in (0, old), f"is-active {is_active()}, MainPID {old} -> {new}")
    rc = kill_check(s, "restart")
    check(any(r.get("kind") == "server_exit" and r.get("launch") == launch for r in records()),
          f"no server_exit record for {launch}")
    # The new daemon serves: a whole session through it.
    s2 = Session(user, ctx["policy"])
    s2.blocked()
    s2.open_gate()
    check(s2.finish() == 0, f"session after restart: {s2.stderr()[-600:]}")
    verify = sh(str(BIN), "audit", "verify", ok=False)
    check(verify.returncode == 0, f"audit verify: {verify.stdout}{verify.stderr}")
    return (f"restart took {took:.1f} s; daemon {old} -> {new}; server {server} died with the old daemon"
            f" (client exit {rc}); a new session works; chain intact")


STEPS = [
    ("install", step_install),
    ("notify-ready", step_notify),
    ("wrapped-server", step_session),
    ("delegate-cgroup", step_cgroup),
    ("journald-fields", step_journal),
    ("reload", step_reload),
    ("stop", step_stop),
    ("restart", step_restart),
]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    check(os.geteuid() == 0, "run as root")
    check(Path("/run/systemd/system").is_dir(), "PID 1 is not systemd")
    ctx = {
        "exe": Path(sys.argv[1]).resolve(),
        "user": User(os.environ.get("MCPGUARD_TEST_USER", "mcpguard-test")),
    }
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(mode=0o755)
    failed = []
    t_all = time.monotonic()
    for name, fn in STEPS:
        t0 = time.monotonic()
        try:
            detail = fn(ctx)
            say(f"PASS {name}: {detail} [{time.monotonic() - t0:.1f} s]")
        except Exception as e:  # every failure is a FAIL line, then the next step
            failed.append(name)
            say(f"FAIL {name}: {type(e).__name__}: {e} [{time.monotonic() - t0:.1f} s]")
            diag_journal()
            for key in ("s1",):
                if key in ctx:
                    diag(ctx[key].stderr()[-2000:])
    total = len(STEPS)
    took = time.monotonic() - t_all
    if failed:
        say(f"VERDICT FAIL ({len(failed)} of {total} steps failed: {', '.join(failed)}) [{took:.0f} s]")
    else:
        say(f"VERDICT PASS ({total}/{total} steps) [{took:.0f} s]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
