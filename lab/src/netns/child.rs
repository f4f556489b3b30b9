//! Processes started in a lab namespace: their output is collected as it comes, so a test
//! can wait for a line with a deadline and a failure shows what the process said.

use super::{describe, lock};
use serde_json::Value;
use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// An error from waiting on a child; its Debug is its multi-line Display, so `unwrap()`
/// prints the child's recent output readably.
pub struct LabError(pub String);

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabError {}

const STDERR_TAIL: usize = 200;

/// A process running in a lab namespace. Its stdout is read line by line on a thread (wait
/// for lines or JSON objects with a deadline); stdout and stderr lines are also echoed to
/// the test's (captured) stderr with a `[label]` prefix, so a failing test shows them.
/// Killed (SIGKILL) and reaped on drop.
pub struct LabChild {
    label: String,
    child: Child,
    lines: Receiver<String>,
    stdout_eof: bool,
    stdout_seen: Vec<String>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Receiver<()>,
    status: Option<ExitStatus>,
}

impl LabChild {
    pub(super) fn spawn(label: String, mut cmd: Command) -> LabChild {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let desc = describe(&cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("lab: cannot start `{desc}`: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let l = label.clone();
        thread::spawn(move || {
            for line in read_lines(stdout) {
                eprintln!("[{l}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (done_tx, stderr_done) = mpsc::channel();
        let (stderr, tail, l) = (child.stderr.take().unwrap(), stderr_tail.clone(), label.clone());
        thread::spawn(move || {
            for line in read_lines(stderr) {
                eprintln!("[{l} stderr] {line}");
                let mut t = lock(&tail);
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
            let _ = done_tx.send(());
        });
        LabChild {
            label,
            child,
            lines,
            stdout_eof: false,
            stdout_seen: Vec::new(),
            stderr_tail,
            stderr_done,
            status: None,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdin, if its command was given `stdin(Stdio::piped())`.
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.child.stdin.as_mut()
    }

    /// Closes stdin (EOF for the child).
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Every stdout line read so far.
    pub fn stdout_lines(&self) -> &[String] {
        &self.stdout_seen
    }

    /// Every stdout line read so far that parses as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout_seen.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The last lines of stderr.
    pub fn stderr_tail(&self) -> String {
        lock(&self.stderr_tail).iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Status, last stdout lines and stderr tail, for failure messages.
    pub fn context(&self) -> String {
        let status = match self.status {
            Some(s) => format!("exited: {s}"),
            None => "running".to_string(),
        };
        let out: Vec<&str> = self.stdout_seen.iter().rev().take(30).rev().map(String::as_str).collect();
        format!(
            "[{} pid {}, {status}]\n--- stdout (last {} lines) ---\n{}\n--- stderr (tail) ---\n{}",
            self.label,
            self.pid(),
            out.len(),
            out.join("\n"),
            self.stderr_tail()
        )
    }

    /// The next stdout line, or `None` after `timeout` or at EOF.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        if self.stdout_eof {
            return None;
        }
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.stdout_seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.stdout_eof = true;
                None
            }
        }
    }

    /// Reads stdout until a line satisfies `pred`; errors at the deadline or EOF.
    pub fn try_wait_line(&mut self, mut pred: impl FnMut(&str) -> bool, timeout: Duration) -> Result<String, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) if pred(&line) => return Ok(line),
                Some(_) => continue,
                None => {
                    let why = if self.stdout_eof {
                        self.reap_if_exited();
                        "stdout closed".to_string()
                    } else {
                        format!("nothing matched within {timeout:?}")
                    };
                    return Err(LabError(format!(
                        "lab: waiting for a line from {}: {why}\n{}",
                        self.label,
                        self.context()
                    )));
                }
            }
        }
    }

    pub fn wait_line(&mut self, pred: impl FnMut(&str) -> bool, timeout: Duration) -> String {
        self.try_wait_line(pred, timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads stdout JSON lines until one satisfies `pred`, e.g.
    /// `child.wait_json(|v| v["event"] == "ready", Duration::from_secs(10))`.
    /// A stdout line that is not JSON is an error (with `--json`, stdout carries only JSON).
    pub fn try_wait_json(
        &mut self,
        mut pred: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, LabError> {
        let mut bad = None;
        let line = self.try_wait_line(
            |l| {
                if l.trim().is_empty() {
                    return false;
                }
                match serde_json::from_str::<Value>(l) {
                    Ok(v) => pred(&v),
                    Err(e) => {
                        bad = Some(format!("{e}: {l}"));
                        true
                    }
                }
            },
            timeout,
        )?;
        if let Some(b) = bad {
            return Err(LabError(format!(
                "lab: {} printed a stdout line that is not JSON ({b})\n{}",
                self.label,
                self.context()
            )));
        }
        Ok(serde_json::from_str(&line).unwrap())
    }

    pub fn wait_json(&mut self, pred: impl FnMut(&Value) -> bool, timeout: Duration) -> Value {
        self.try_wait_json(pred, timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for the child to exit (stdout and stderr closed, then reaped), reading the rest
    /// of its stdout into [`LabChild::stdout_lines`]; kills it and errors after `timeout`.
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, LabError> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let deadline = Instant::now() + timeout;
        while !self.stdout_eof {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.next_line(left);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let stderr_closed =
            self.stdout_eof && !matches!(self.stderr_done.recv_timeout(left), Err(RecvTimeoutError::Timeout));
        if !stderr_closed {
            self.kill();
            return Err(LabError(format!(
                "lab: {} still running after {timeout:?}; killed\n{}",
                self.label,
                self.context()
            )));
        }
        let s = self.child.wait().unwrap_or_else(|e| panic!("lab: waiting for {}: {e}", self.label));
        self.status = Some(s);
        Ok(s)
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.try_wait_exit(timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    fn reap_if_exited(&mut self) {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
            }
        }
    }

    /// Sends a signal (e.g. `libc::SIGTERM` for a graceful stop).
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(self.child.id() as i32, sig) };
        }
    }

    /// Whether it was not killed or seen to exit (by this handle).
    pub fn is_running(&self) -> bool {
        self.status.is_none()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().unwrap_or_else(|_| ExitStatus::from_raw(9)));
        }
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_lines(pipe: impl Read) -> impl Iterator<Item = String> {
    let mut r = BufReader::new(pipe);
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
        }
    })
}
