//! Delays packets by a fixed time: the kernel here has no netem, so a router or a node
//! queues them to user space (NFQUEUE) and this program hands them back when they are due.
//!
//! ```text
//! iptables-legacy -t mangle -A POSTROUTING -o eth0 -p udp -j NFQUEUE --queue-num 0 --queue-bypass
//! introducer-lab-delay --queue 0 --ms 100
//! ```
//!
//! The kernel keeps the packets; only their verdicts wait here, in arrival order (one
//! fixed delay keeps them in order). `--queue-bypass` lets packets through undelayed while
//! nothing listens, and a full queue (`--max` packets) passes them on undelayed too
//! (fail-open), so the delay never turns into loss. Errors are one line on stderr and exit
//! status 2.

use nfq::{Queue, Verdict};
use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: introducer-lab-delay --queue NUM --ms MILLISECONDS [--max PACKETS]";

/// How often the queue is read while nothing is due: the delay's resolution.
const TICK: Duration = Duration::from_micros(500);

fn parse(args: &[String]) -> Result<(u16, Duration, u32), String> {
    let (mut queue, mut delay, mut max) = (None, None, 4096);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--queue" => queue = Some(value()?.parse().map_err(|e| format!("--queue: {e}"))?),
            "--ms" => delay = Some(Duration::from_millis(value()?.parse().map_err(|e| format!("--ms: {e}"))?)),
            "--max" => max = value()?.parse().map_err(|e| format!("--max: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((queue.ok_or("--queue is required")?, delay.ok_or("--ms is required")?, max))
}

fn run(num: u16, delay: Duration, max: u32) -> std::io::Result<()> {
    let mut queue = Queue::open()?;
    queue.bind(num)?;
    queue.set_queue_max_len(num, max)?;
    queue.set_fail_open(num, true)?;
    queue.set_copy_range(num, 0)?;
    queue.set_nonblocking(true);
    let mut held = VecDeque::new();
    loop {
        loop {
            match queue.recv() {
                Ok(mut msg) => {
                    msg.set_verdict(Verdict::Accept);
                    held.push_back((Instant::now() + delay, msg));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, msg) = held.pop_front().expect("checked");
            queue.verdict(msg)?;
        }
        let next = held.front().map_or(TICK, |(due, _)| due.saturating_duration_since(now).min(TICK));
        std::thread::sleep(next);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (num, delay, max) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("introducer-lab-delay: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(num, delay, max) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("introducer-lab-delay: queue {num}: {e}");
            ExitCode::from(2)
        }
    }
}
