//! Many `tracewire exec --relay` processes on one session at once, as an agent running
//! tool calls in parallel starts them: real `tracewire relay`, `exec-server` and `exec`
//! processes on loopback. A session at its client limit refuses with a retryable
//! `Reset(SESSION_FULL)`, which `exec` retries with a bounded backoff; a client killed
//! mid-run disturbs none of the others, and its command is killed.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{BIN, announced, exit_within, keygen};
use tracewire_testkit::eventually;

const TOKEN: &str = "relay-clients-token";
const SESSION: &str = "S1";

/// A child process stopped by its own pid when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A relay (at most 8 clients per session, this idle timeout) and an exec-server attached
/// to [`SESSION`], the server first; the relay's URL and the server's public key.
fn relay_and_server(dir: &Path, idle_timeout: &str) -> (Vec<Process>, String, std::path::PathBuf) {
    let key = keygen(dir);
    let mut relay = Process(
        Command::new(BIN)
            .args(["relay", "--listen", "127.0.0.1:0", "--token", TOKEN, "--max-clients", "8"])
            .args(["--idle-timeout", idle_timeout])
            .env("OTEL_SDK_DISABLED", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let address = announced(&mut BufReader::new(relay.0.stdout.take().unwrap()), "listening on ");
    let url = format!("http://{address}");
    let mut server = Process(
        Command::new(BIN)
            .args(["exec-server", "--relay", &url, "--session", SESSION, "--token", TOKEN, "--key"])
            .arg(&key)
            .env("OTEL_SDK_DISABLED", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    announced(&mut BufReader::new(server.0.stdout.take().unwrap()), "serving session ");
    (vec![server, relay], url, tracewire_relay::public_path(&key))
}

/// A `tracewire exec --relay ... --session S1 -- sh -c SCRIPT`, started.
fn exec(url: &str, pubkey: &Path, script: &str) -> Process {
    Process(
        Command::new(BIN)
            .args(["exec", "--relay", url, "--session", SESSION, "--token", TOKEN, "--server-key"])
            .arg(pubkey)
            .args(["--", "sh", "-c", script])
            .env("OTEL_SDK_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Waits for `p` to exit (failing after `limit`); its status, stdout and stderr.
fn finish(p: &mut Process, limit: Duration) -> (std::process::ExitStatus, String, String) {
    let status = exit_within(&mut p.0, limit, "an exec did not finish");
    let (mut out, mut err) = (String::new(), String::new());
    p.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status, out, err)
}

/// Whether a live process (not a zombie) has exactly `argv` as its command line.
fn running(argv: &[&str]) -> bool {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want)
            && std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| !s.contains(") Z "))
    })
}

#[test]
fn thirty_concurrent_execs_on_one_session_with_a_limit_of_eight_all_succeed() {
    let dir = tracewire_testkit::TempDir::new("tracewire-relay-clients").unwrap();
    let (_processes, url, pubkey) = relay_and_server(dir.path(), "30s");
    // Each holds its slot for a while, so that more than 8 are attached at once and the
    // relay refuses some (SESSION_FULL): they must retry.
    let mut execs: Vec<(String, Process)> = (0..30)
        .map(|i| {
            let word = format!("unique-{i}-{}", std::process::id());
            let p = exec(&url, &pubkey, &format!("echo {word}; sleep 0.3"));
            (word, p)
        })
        .collect();
    for (word, p) in &mut execs {
        let (status, out, err) = finish(p, Duration::from_secs(60));
        assert!(status.success(), "{word}: {status}, stderr: {err}");
        assert_eq!(out, format!("{word}\n"), "stderr: {err}");
    }
}

#[test]
fn an_exec_killed_mid_run_disturbs_none_of_five_others_and_its_command_is_killed() {
    let dir = tracewire_testkit::TempDir::new("tracewire-relay-killed").unwrap();
    let (_processes, url, pubkey) = relay_and_server(dir.path(), "30s");
    // A distinctive command line, to find the command the server runs for the victim.
    let sleep_arg = format!("30.{}", std::process::id());
    let mut victim = exec(&url, &pubkey, &format!("echo started; exec sleep {sleep_arg}"));
    let mut others: Vec<(String, Process)> = (0..5)
        .map(|i| {
            let word = format!("other-{i}");
            let p = exec(&url, &pubkey, &format!("sleep 1; echo {word}"));
            (word, p)
        })
        .collect();
    // Mid-run: the command has started and printed its first line.
    let mut stdout = BufReader::new(victim.0.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "started\n");
    let ran = eventually(Duration::from_secs(10), || running(&["sleep", &sleep_arg]));
    assert!(ran.is_ok(), "the victim's command never ran");
    // SIGKILL to the client's own pid: no goodbye, its connection just drops.
    victim.0.kill().unwrap();
    let _ = victim.0.wait();
    for (word, p) in &mut others {
        let (status, out, err) = finish(p, Duration::from_secs(60));
        assert!(status.success(), "{word}: {status}, stderr: {err}");
        assert_eq!(out, format!("{word}\n"), "stderr: {err}");
    }
    // The server kills the command of a client that went away.
    let gone = eventually(Duration::from_secs(15), || !running(&["sleep", &sleep_arg]));
    assert!(gone.is_ok(), "the killed client's command is still running");
}

#[test]
fn an_exec_refused_until_the_end_of_its_retries_fails_naming_the_reason() {
    let dir = tracewire_testkit::TempDir::new("tracewire-relay-refused").unwrap();
    let (mut processes, url, pubkey) = relay_and_server(dir.path(), "3s");
    // No exec-server: a client's first frame waits for one for the idle timeout, then
    // gets Reset(PEER_GONE), retryable; the retries stop after 10 s in all.
    drop(processes.remove(0));
    let t0 = Instant::now();
    let mut p = exec(&url, &pubkey, "echo never");
    let (status, out, err) = finish(&mut p, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert_eq!(out, "");
    assert!(err.contains("PeerGone") && err.contains("retryable"), "{err}");
    assert!(t0.elapsed() >= Duration::from_secs(8), "gave up after {:?}: {err}", t0.elapsed());
}
