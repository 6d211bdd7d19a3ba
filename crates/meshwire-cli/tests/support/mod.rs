//! Helpers for tests that run the real `meshwire` binary: spawn a process,
//! read its stdout line by line with a bounded wait, keep its stderr for the
//! failure message, and kill it when the handle is dropped, so a failing
//! test leaves no process behind.
//!
//! Use it from an integration test with `mod support;`. Nothing here waits
//! without a bound: every wait takes a limit and reports what the process
//! said when the limit passes.

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_meshwire");

/// How long a node may take to print its ready line.
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(15);

/// Stderr kept per process; beyond this the oldest half is dropped (a
/// chatty node must not grow the test's memory without bound).
const STDERR_KEEP: usize = 1 << 20;

/// A running `meshwire` process, killed (SIGKILL) and reaped on drop.
pub(crate) struct Proc {
    name: String,
    child: Child,
    started: Instant,
    lines: mpsc::Receiver<String>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

/// What a process left behind once it exited.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Name given at spawn, for messages.
    pub(crate) name: String,
    /// How it exited.
    pub(crate) status: ExitStatus,
    /// Stdout lines not already taken with [`Proc::next_line`].
    pub(crate) stdout: Vec<String>,
    /// Everything it wrote to stderr (tail, if very long).
    pub(crate) stderr: String,
    /// From spawn to exit (as observed, within ~5 ms).
    pub(crate) elapsed: Duration,
}

impl Finished {
    /// The exit code, or `None` if a signal ended the process.
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Stdout lines joined with `\n`.
    pub(crate) fn stdout_text(&self) -> String {
        self.stdout.join("\n")
    }

    /// Panics with the process's output unless it exited with `code`.
    pub(crate) fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "{} exited with {} (expected code {code})\nstdout:\n{}\nstderr:\n{}",
            self.name,
            self.status,
            self.stdout_text(),
            self.stderr
        );
        self
    }
}

/// `meshwire ARGS` with a clean logging environment: RUST_LOG is removed so
/// each command's default applies (pass `--log` to change it) and colours
/// are off so captured logs read well in a failure message.
///
/// Links are TLS by default and admit only listed keys, so every process
/// a test starts gets credentials from the binary's [`keyring`] unless
/// ARGS already says how it is secured (`--key`, `--trust`, `--ca` or
/// `--insecure`): its own key (`--key`, or `DIR/node.key` with `--data
/// DIR`, so a restarted node keeps its id) and the shared trust file that
/// lists every key of the keyring.
pub(crate) fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(with_credentials(args))
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    c
}

/// Subcommands that take `--key`/`--trust`.
const SECURED: &[&str] = &[
    "node", "pub", "sub", "request", "reply", "serve", "call", "kv",
];

/// ARGS with credentials from the [`keyring`] added, as [`command`] says.
pub(crate) fn with_credentials(args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let said = args
        .iter()
        .any(|a| matches!(*a, "--key" | "--trust" | "--ca" | "--insecure"));
    // The subcommand is the first word that is not a flag (`bench kv` is
    // not `kv`).
    let Some(at) = args
        .iter()
        .position(|a| !a.starts_with('-'))
        .filter(|&i| SECURED.contains(&args[i]))
    else {
        return out;
    };
    if said {
        return out;
    }
    let ring = keyring();
    let mut extra = vec!["--trust".to_owned(), ring.trust.display().to_string()];
    let data = args
        .iter()
        .position(|a| *a == "--data")
        .and_then(|i| args.get(i + 1));
    match data {
        Some(dir) => {
            let key = std::path::Path::new(dir).join("node.key");
            if !key.exists() {
                std::fs::create_dir_all(dir).expect("data directory");
                std::fs::copy(ring.next_key(), &key).expect("key copied into the data directory");
            }
        }
        None => extra.extend(["--key".to_owned(), ring.next_key().display().to_string()]),
    }
    out.splice(at + 1..at + 1, extra);
    out
}

/// Keys for the processes of one test binary, and a trust file listing
/// them all: every process admits every other, and nothing else.
pub(crate) struct Keyring {
    /// The shared trust file.
    pub(crate) trust: std::path::PathBuf,
    keys: Vec<std::path::PathBuf>,
    next: std::sync::atomic::AtomicUsize,
}

/// Keys in a [`Keyring`]; a test binary that starts more processes than
/// this fails with a message saying so.
const KEYRING_SIZE: usize = 512;

impl Keyring {
    /// A key no other process of this binary has been given.
    pub(crate) fn next_key(&self) -> &std::path::Path {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.keys.get(i).unwrap_or_else(|| {
            panic!("the test keyring has only {KEYRING_SIZE} keys; raise KEYRING_SIZE")
        })
    }
}

/// This test binary's keyring, made on first use under the target
/// directory's scratch space.
pub(crate) fn keyring() -> &'static Keyring {
    static RING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    RING.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("keyring-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("keyring directory")
            .keep();
        let mut trust = String::from("# every key of this test binary's keyring\n");
        let keys = (0..KEYRING_SIZE)
            .map(|i| {
                let id = meshwire::security::Identity::generate().expect("key");
                let path = dir.join(format!("k{i}.key"));
                id.save(&path).expect("key saved");
                trust.push_str(&format!("{}\n", id.node_id()));
                path
            })
            .collect();
        let trust_path = dir.join("trust.txt");
        std::fs::write(&trust_path, trust).expect("trust file");
        Keyring {
            trust: trust_path,
            keys,
            next: Default::default(),
        }
    })
}

impl Proc {
    /// Spawns `meshwire ARGS` with stdin closed.
    pub(crate) fn spawn(name: &str, args: &[&str]) -> Proc {
        Self::spawn_command(name, command(args), None)
    }

    /// Spawns `meshwire ARGS`, writes `input` to its stdin, then closes it.
    pub(crate) fn spawn_with_stdin(name: &str, args: &[&str], input: &[u8]) -> Proc {
        Self::spawn_command(name, command(args), Some(input.to_vec()))
    }

    /// Spawns a prepared command (stdio is set up here).
    pub(crate) fn spawn_command(name: &str, mut cmd: Command, input: Option<Vec<u8>>) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({BIN}): {e}"));
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            // A thread, so a process that does not read cannot block us;
            // stdin closes when the thread ends.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match stderr_pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                        s.push_str(&String::from_utf8_lossy(&chunk[..n]));
                        if s.len() > STDERR_KEEP {
                            let mut cut = s.len() - STDERR_KEEP / 2;
                            while !s.is_char_boundary(cut) {
                                cut += 1;
                            }
                            s.replace_range(..cut, "[...]\n");
                        }
                    }
                }
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            started,
            lines,
            stdout_reader: Some(stdout_reader),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// The name given at spawn.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, waiting at most `limit`; `None` on timeout or
    /// once stdout is closed and drained.
    pub(crate) fn next_line(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    /// What the process wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The exit status if the process has exited.
    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// True while the process runs.
    pub(crate) fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits at most `limit` for the process to exit.
    pub(crate) fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGTERM (through the `kill` command: no unsafe code and no
    /// extra crate for one signal).
    pub(crate) fn signal_term(&self) {
        self.signal("TERM");
    }

    /// Sends SIGHUP (reload).
    pub(crate) fn signal_hup(&self) {
        self.signal("HUP");
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "could not send SIG{name} to {} ({})",
            self.name,
            self.pid()
        );
    }

    /// SIGKILL now and reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits at most `limit` for the process to exit on its own, then
    /// collects its output. Panics (with its stderr) if it does not exit.
    pub(crate) fn finish(mut self, limit: Duration) -> Finished {
        let Some(status) = self.wait(limit) else {
            panic!(
                "{} did not exit within {limit:?}\nstderr:\n{}",
                self.name,
                self.stderr()
            );
        };
        let elapsed = self.started.elapsed();
        // The pipes close with the process, so the readers end promptly;
        // bounded all the same, in case something inherited a pipe.
        let drained_by = Instant::now() + Duration::from_secs(5);
        let mut stdout = Vec::new();
        loop {
            let left = drained_by.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => stdout.push(line),
                Err(_) => break,
            }
        }
        for h in [self.stdout_reader.take(), self.stderr_reader.take()]
            .into_iter()
            .flatten()
        {
            while !h.is_finished() && Instant::now() < drained_by {
                std::thread::sleep(Duration::from_millis(2));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        Finished {
            name: self.name.clone(),
            status,
            stdout,
            stderr: self.stderr(),
            elapsed,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `meshwire ARGS` (stdin closed) to completion, at most `limit`.
pub(crate) fn run(args: &[&str], limit: Duration) -> Finished {
    let name = format!("meshwire {}", args.join(" "));
    Proc::spawn(&name, args).finish(limit)
}

/// Runs `meshwire ARGS` with `input` on stdin to completion, at most `limit`.
pub(crate) fn run_with_stdin(args: &[&str], input: &[u8], limit: Duration) -> Finished {
    let name = format!("meshwire {}", args.join(" "));
    Proc::spawn_with_stdin(&name, args, input).finish(limit)
}

/// A `meshwire node` that printed its ready line.
pub(crate) struct NodeProc {
    /// The process (dereferenced to, for `pid`, `stderr`, `signal_term`...).
    pub(crate) proc: Proc,
    /// The address from the ready line (`127.0.0.1:PORT`).
    pub(crate) listen: String,
    /// The node id from the ready line.
    pub(crate) id: String,
}

impl NodeProc {
    /// Starts `meshwire node ARGS`, adding `--listen 127.0.0.1:0` unless
    /// ARGS has a `--listen`/`-l`, and waits (bounded) for the ready line.
    pub(crate) fn start(args: &[&str]) -> NodeProc {
        Self::start_named("node", args)
    }

    /// [`NodeProc::start`] with a name for failure messages.
    pub(crate) fn start_named(name: &str, args: &[&str]) -> NodeProc {
        let mut full = vec!["node"];
        if !args.iter().any(|a| *a == "--listen" || *a == "-l") {
            full.extend(["--listen", "127.0.0.1:0"]);
        }
        full.extend_from_slice(args);
        let mut proc = Proc::spawn(name, &full);
        let deadline = Instant::now() + READY_WITHIN;
        let line = loop {
            if let Some(line) = proc.next_line(Duration::from_millis(50)) {
                break line;
            }
            if let Some(status) = proc.try_status() {
                // Let the stderr reader catch up before reporting.
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "{name} exited with {status} before its ready line\nstderr:\n{}",
                    proc.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{name} printed no ready line within {READY_WITHIN:?}\nstderr:\n{}",
                    proc.stderr()
                );
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{name}: ready line {line:?} is not JSON: {e}"));
        assert_eq!(
            v["event"], "ready",
            "{name}: unexpected first line {line:?}"
        );
        let listen = v["listen"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no listen address in {line:?}"))
            .to_owned();
        let id = v["node"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no node id in {line:?}"))
            .to_owned();
        NodeProc { proc, listen, id }
    }

    /// Resident memory of the node process in KiB (Linux `/proc`).
    pub(crate) fn vm_rss_kib(&self) -> Option<u64> {
        vm_rss_kib(self.proc.pid())
    }

    /// SIGTERM, then wait at most `limit` for the exit status.
    pub(crate) fn terminate(self, limit: Duration) -> Finished {
        self.proc.signal_term();
        self.proc.finish(limit)
    }
}

impl std::ops::Deref for NodeProc {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for NodeProc {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// Resident memory of process `pid` in KiB, from `/proc/PID/status`.
pub(crate) fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `meshwire keygen --out PATH`; returns the NodeId it printed.
pub(crate) fn keygen(path: &std::path::Path) -> String {
    let p = path.to_str().expect("UTF-8 path");
    let done = run(&["keygen", "--out", p], Duration::from_secs(20));
    done.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&done.stdout_text()).expect("JSON");
    assert_eq!(v["key"], p);
    v["node"].as_str().expect("a node id").to_owned()
}

/// Keys made by `meshwire keygen` in a temporary directory, and a trust
/// file that lists every one of them: the TLS set-up of a process test.
pub(crate) struct TlsKeys {
    dir: tempfile::TempDir,
    keys: Vec<String>,
    trust: String,
}

impl TlsKeys {
    /// One key per name (`DIR/NAME.key`), all trusted.
    pub(crate) fn make(names: &[&str]) -> TlsKeys {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut keys = Vec::new();
        let mut ids = Vec::new();
        for name in names {
            let path = dir.path().join(format!("{name}.key"));
            ids.push(keygen(&path));
            keys.push(path.to_str().expect("UTF-8 temporary path").to_owned());
        }
        let trust = dir.path().join("trust");
        std::fs::write(&trust, ids.join("\n")).expect("trust file written");
        let trust = trust.to_str().expect("UTF-8 temporary path").to_owned();
        TlsKeys { dir, keys, trust }
    }

    /// `--key KEY --trust FILE` for the `i`th key.
    pub(crate) fn args(&self, i: usize) -> [&str; 4] {
        ["--key", &self.keys[i], "--trust", &self.trust]
    }

    /// The directory the keys are in (for other files of the test).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// `meshwire reply --connect ADDR --subject echo EXTRA...`: an echo
/// responder, killed when dropped.
pub(crate) fn echo_responder(addr: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["reply", "--connect", addr, "--subject", "echo"];
    args.extend_from_slice(extra);
    Proc::spawn("reply", &args)
}

/// `meshwire request --connect ADDR --subject echo EXTRA... PAYLOAD`, run
/// to completion.
pub(crate) fn echo_request(addr: &str, extra: &[&str], payload: &str) -> Finished {
    let mut args = vec!["request", "--connect", addr, "--subject", "echo"];
    args.extend_from_slice(extra);
    args.push(payload);
    run(&args, Duration::from_secs(20))
}

/// [`echo_request`] again and again until it is answered (a responder
/// subscribes asynchronously; until then a request finds no responders),
/// within 20 s. Panics with the last failure.
pub(crate) fn echo_request_answered(addr: &str, extra: &[&str], payload: &str) -> Finished {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = echo_request(addr, extra, payload);
        if done.code() == Some(0) || Instant::now() > deadline {
            done.assert_code(0);
            return done;
        }
    }
}
