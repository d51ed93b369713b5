//! The exec-server end to end over gRPC on loopback: real processes, real bytes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use sha2::{Digest, Sha256};
use tracewire_exec::{Event, ExecClient, ExecConfig, ExecError, ExecServer, OutputStream, ProcessState, Start};
use tracewire_proto::v1::{Envelope, Kill, Request, envelope::Body, request::Method, response};
use tracewire_rpc::grpc::Address;
use tracewire_rpc::{ErrorCode, RpcError, ServerConfig};
use tracewire_testkit::{eventually_async, eventually_some_async};

use common::frames::alive;
use common::{argv, client, server};

/// How long a test waits for an event.
const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_signals() {
    let s = server().await;
    let c = client(&s).await;
    for (cmd, code, signal, shell) in [
        ("exit 0", Some(0), None, 0),
        ("exit 3", Some(3), None, 3),
        ("exit 255", Some(255), None, 255),
        ("kill -TERM $$", None, Some(15), 143),
        ("kill -KILL $$", None, Some(9), 137),
    ] {
        let out = c.start(argv(&["sh", "-c", cmd])).await.unwrap().wait_with_output().await.unwrap();
        assert_eq!((out.status.code, out.status.signal), (code, signal), "{cmd}");
        assert_eq!(out.status.shell_code(), shell, "{cmd}");
    }
}

/// Both pipes busy at once: the two readers race to number and queue their chunks, and the
/// client must still see every Output in sequence order, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_sequence_numbers_arrive_in_order_when_both_streams_are_busy() {
    let s = server().await;
    let c = client(&s).await;
    // Rounds of one line on each stream written together, then a pause: each round wakes
    // both readers at once.
    let script = "i=0; while [ $i -lt 150 ]; do echo out$i; echo err$i >&2; sleep 0.002; i=$((i+1)); done";
    for _ in 0..2 {
        let mut p = c.start(argv(&["sh", "-c", script])).await.unwrap();
        let mut seqs = Vec::new();
        while let Some(e) = p.next_event().await {
            if let Event::Output { seq, .. } = e {
                seqs.push(seq);
            }
        }
        let expected: Vec<u64> = (0..seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "Outputs in sequence order, none missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_are_separate_and_ordered() {
    let s = server().await;
    let c = client(&s).await;
    let mut p = c.start(argv(&["sh", "-c", "echo out1; echo err1 >&2; sleep 0.05; echo out2"])).await.unwrap();
    let mut events = Vec::new();
    while let Some(e) = p.next_event().await {
        events.push(e);
    }
    let seqs: Vec<u64> =
        events.iter().filter_map(|e| if let Event::Output { seq, .. } = e { Some(*seq) } else { None }).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequence numbers increase: {seqs:?}");
    let text = |want: OutputStream| -> String {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Output { stream, data, .. } if *stream == want => {
                    Some(String::from_utf8_lossy(data).into_owned())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(text(OutputStream::Stdout), "out1\nout2\n");
    assert_eq!(text(OutputStream::Stderr), "err1\n");
    assert!(matches!(events.last(), Some(Event::Exited(_))), "Exited is last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trip_with_cat() {
    let s = server().await;
    let c = client(&s).await;
    // Streamed with WriteStdin, then CloseStdin.
    let p = c.start(argv(&["cat"])).await.unwrap();
    for chunk in ["hello ", "remote ", "cat\n"] {
        p.write_stdin(Bytes::from(chunk)).await.unwrap();
    }
    p.close_stdin().await.unwrap();
    let out = p.wait_with_output().await.unwrap();
    assert_eq!(out.stdout, b"hello remote cat\n");
    assert_eq!(out.status.code, Some(0));
    // Given with Start.
    let start = Start { stdin: Some(Bytes::from_static(b"all at once")), ..argv(&["cat"]) };
    let out = c.start(start).await.unwrap().wait_with_output().await.unwrap();
    assert_eq!(out.stdout, b"all at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_of_output_arrive_intact() {
    let s = server().await;
    let c = client(&s).await;
    let n = 10 * 1024 * 1024;
    let script = format!("head -c {n} /dev/urandom | tee /dev/stderr | sha256sum | cut -d' ' -f1 >&2");
    let out = c.start(argv(&["sh", "-c", &script])).await.unwrap().wait_with_output().await.unwrap();
    assert_eq!(out.stdout.len(), 0);
    // stderr: the 10 MiB, then the child's own sha256 of them.
    assert_eq!(out.stderr.len(), n + 65);
    let (data, digest) = out.stderr.split_at(n);
    let ours = Sha256::digest(data).iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    });
    assert_eq!(format!("{ours}\n").as_bytes(), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_written_just_before_exit_arrives_before_exited() {
    let s = server().await;
    let c = client(&s).await;
    for i in 0..30 {
        let out = c
            .start(argv(&["sh", "-c", &format!("printf 'last words {i}'")]))
            .await
            .unwrap()
            .wait_with_output()
            .await
            .unwrap();
        assert_eq!(out.stdout, format!("last words {i}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_signal() {
    let s = server().await;
    let c = client(&s).await;
    let p = c.start(argv(&["sleep", "30"])).await.unwrap();
    p.kill().await.unwrap();
    let out = p.wait_with_output().await.unwrap();
    assert_eq!(out.status.signal, Some(9));

    let p = c.start(argv(&["sleep", "30"])).await.unwrap();
    p.signal(2).await.unwrap();
    assert_eq!(p.wait_with_output().await.unwrap().status.signal, Some(2));

    // A process that is gone is NOT_FOUND, a typed error.
    let err = c.kill(999_999).await.unwrap_err();
    assert!(matches!(err, ExecError::Rpc(RpcError::Remote { code: ErrorCode::NotFound, .. })), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_process() {
    let s = server().await;
    let c = client(&s).await;
    let start = Start { timeout_ms: Some(200), ..argv(&["sleep", "30"]) };
    let out = c.start(start).await.unwrap().wait_with_output().await.unwrap();
    assert_eq!(out.status.signal, Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_ends_the_child() {
    let s = server().await;
    let c = client(&s).await;
    let p = c.start(argv(&["sleep", "30"])).await.unwrap();
    let pid = p.pid;
    assert!(alive(pid));
    drop(p);
    drop(c);
    // The server has handled the disconnect and every process task has ended.
    tokio::time::timeout(Duration::from_secs(10), s.server.idle()).await.expect("the server never went idle");
    assert!(!alive(pid), "the child outlived its client's connection");
    assert_eq!(s.server.running(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// With `kill_on_disconnect` off, a client that goes away leaves its process to run to its
/// natural end. The server has handled the disconnect once it no longer counts the
/// connection; the child is then still held, running, and the history records how it
/// ended: its exit code, not a signal. A kill, fast or slow, is recorded as signal 9.
async fn keep_on_disconnect_keeps_the_child() {
    let dir = tracewire_testkit::TempDir::new("tracewire-exec-keep").unwrap();
    let store = tracewire_exec::Store::open(dir.path().join("exec.db")).unwrap();
    let mut config = ExecConfig::default();
    config.kill_on_disconnect = false;
    let s = common::serve_handler(ExecServer::new(config).with_store(store), ServerConfig::default()).await;
    let c = client(&s).await;
    // Long enough to outlast the disconnect's handling.
    let p = c.start(argv(&["sleep", "1"])).await.unwrap();
    let (pid, process_id) = (p.pid, p.process_id);
    drop(p);
    drop(c);
    let snap = eventually_some_async(WITHIN, || async { Some(s.server.snapshot()).filter(|s| s.connections == 0) })
        .await
        .expect("the server never handled the disconnect");
    let held = snap.processes.iter().find(|p| p.process_id == process_id);
    assert!(held.is_some_and(|p| p.state == ProcessState::Running), "the child was still running: {snap:?}");
    tokio::time::timeout(WITHIN, s.server.idle()).await.expect("the child never ended");
    assert!(!alive(pid));
    let history = s.server.store().unwrap().recent(1).await.unwrap();
    assert_eq!((history[0].pid, history[0].exit_code, history[0].signal), (pid, Some(0), None), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_execs() {
    let s = server().await;
    let c = client(&s).await;
    let runs = (0..100).map(|i| {
        let c = c.clone();
        tokio::spawn(async move {
            let out =
                c.start(argv(&["sh", "-c", &format!("echo {i}")])).await.unwrap().wait_with_output().await.unwrap();
            (i, String::from_utf8(out.stdout).unwrap(), out.status.code)
        })
    });
    for r in runs {
        let (i, out, code) = r.await.unwrap();
        assert_eq!(out, format!("{i}\n"));
        assert_eq!(code, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failures_and_bad_requests_are_typed_errors() {
    let s = server().await;
    let c = client(&s).await;
    let err = c.start(argv(&["/definitely/not/here"])).await.unwrap_err();
    assert!(matches!(err, ExecError::Rpc(RpcError::Remote { code: ErrorCode::SpawnFailed, .. })), "{err:?}");
    let err = c.start(Start::default()).await.unwrap_err();
    assert!(matches!(err, ExecError::Rpc(RpcError::Remote { code: ErrorCode::InvalidRequest, .. })), "{err:?}");
    let start = Start { cwd: "/no/such/dir".into(), ..argv(&["true"]) };
    assert!(c.start(start).await.is_err());
    // The same connection still works.
    assert_eq!(c.start(argv(&["true"])).await.unwrap().wait_with_output().await.unwrap().status.code, Some(0));
}

async fn recv_response(link: &mut tracewire_rpc::Link) -> Envelope {
    let frame = tokio::time::timeout(Duration::from_secs(5), link.rx.recv()).await.unwrap().unwrap();
    Envelope::decode(frame).unwrap()
}

fn error_code(env: &Envelope) -> Option<ErrorCode> {
    match &env.body {
        Some(Body::Response(r)) => match &r.result {
            Some(response::Result::Error(e)) => ErrorCode::try_from(e.code).ok(),
            _ => None,
        },
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_oversized_envelopes_get_errors_and_the_connection_survives() {
    let s = server().await;
    let address: Address = s.address.parse().unwrap();
    let mut link = tracewire_rpc::grpc::connect(&address).await.unwrap();

    // Not protobuf at all.
    link.tx.send(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f])).await.unwrap();
    let r = recv_response(&mut link).await;
    assert_eq!((r.id, error_code(&r)), (0, Some(ErrorCode::Decode)));

    // A request without a method (or with one this server does not know).
    let env = Envelope { id: 5, body: Some(Body::Request(Request { method: None })), ..Envelope::default() };
    link.tx.send(Bytes::from(env.encode_to_vec())).await.unwrap();
    let r = recv_response(&mut link).await;
    assert_eq!((r.id, error_code(&r)), (5, Some(ErrorCode::UnknownMethod)));

    // A method number from the future: decoded as unknown, answered as such.
    let mut future = Request::default().encode_to_vec();
    future.extend_from_slice(&[0xca, 0x01, 0x00]); // field 25, empty message
    let mut raw = Envelope { id: 6, ..Envelope::default() }.encode_to_vec();
    raw.push(0x52); // field 10 (request), length-delimited
    raw.push(u8::try_from(future.len()).unwrap());
    raw.extend_from_slice(&future);
    link.tx.send(Bytes::from(raw)).await.unwrap();
    let r = recv_response(&mut link).await;
    assert_eq!((r.id, error_code(&r)), (6, Some(ErrorCode::UnknownMethod)));

    // Larger than the envelope limit (4 MiB by default).
    link.tx.send(Bytes::from(vec![0u8; (4 << 20) + 1])).await.unwrap();
    let r = recv_response(&mut link).await;
    assert_eq!(error_code(&r), Some(ErrorCode::TooLarge));

    // Still alive: a valid request on the same stream.
    let env = Envelope {
        id: 7,
        body: Some(Body::Request(Request { method: Some(Method::Kill(Kill { process_id: 42 })) })),
        ..Envelope::default()
    };
    link.tx.send(Bytes::from(env.encode_to_vec())).await.unwrap();
    let r = recv_response(&mut link).await;
    assert_eq!((r.id, error_code(&r)), (7, Some(ErrorCode::NotFound)));
    // And the server serves new connections.
    let c = ExecClient::connect(&s.address).await.unwrap();
    assert_eq!(c.start(argv(&["true"])).await.unwrap().wait_with_output().await.unwrap().status.code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_transport() {
    let dir = tracewire_testkit::TempDir::new("tracewire-exec-unix").unwrap();
    let path = dir.path().join("exec.sock");
    let address = format!("unix:{}", path.display());
    let bound = tracewire_rpc::grpc::BoundServer::bind(&address.parse().unwrap()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::sync::Arc::new(tracewire_exec::ExecServer::new(ExecConfig::default()));
    tokio::spawn(bound.run(server, ServerConfig::default(), async {
        let _ = stopped.await;
    }));
    let c = ExecClient::connect(&address).await.unwrap();
    let out = c.start(argv(&["echo", "over unix"])).await.unwrap().wait_with_output().await.unwrap();
    assert_eq!(out.stdout, b"over unix\n");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_pauses_the_child_instead_of_buffering() {
    let s = server().await;
    let c = client(&s).await;
    // 64 MiB of output; the client reads nothing for a while.
    let mut p = c.start(argv(&["sh", "-c", "head -c 67108864 /dev/zero"])).await.unwrap();
    // The client reading nothing for a while is the behaviour under test: an unpaused child
    // writes 64 MiB in well under this time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = p.pid;
    // The child is blocked on a full pipe, not finished: the server did not read ahead.
    assert!(alive(pid), "the child should be paused by backpressure");
    let mut total = 0usize;
    while let Some(e) = p.next_event().await {
        match e {
            Event::Output { data, .. } => total += data.len(),
            Event::Exited(st) => {
                assert_eq!(st.code, Some(0));
                break;
            }
        }
    }
    assert_eq!(total, 64 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_history_is_persisted_and_listed_after_a_barrier() {
    let dir = tracewire_testkit::TempDir::new("tracewire-exec-store").unwrap();
    let store = tracewire_exec::Store::open(dir.path().join("exec.db")).unwrap();
    let s = common::serve_handler(
        tracewire_exec::ExecServer::new(ExecConfig::default()).with_store(store),
        ServerConfig::default(),
    )
    .await;
    let c = client(&s).await;
    c.start(argv(&["sh", "-c", "printf hello; printf oops >&2; exit 4"]))
        .await
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    let p = c.start(argv(&["sleep", "30"])).await.unwrap();
    p.kill().await.unwrap();
    p.wait_with_output().await.unwrap();
    let list = c.list(10).await.unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let (killed, first) = (&list[0], &list[1]);
    assert_eq!(first.argv, ["sh", "-c", "printf hello; printf oops >&2; exit 4"]);
    assert_eq!((first.exit_code, first.stdout_bytes, first.stderr_bytes), (Some(4), 5, 4));
    assert!(first.ended_unix_nanos >= first.started_unix_nanos && first.pid > 0);
    assert_eq!((killed.argv.clone(), killed.signal), (vec!["sleep".to_owned(), "30".to_owned()], Some(9)));
    // The file has them too, for any reader.
    let rows: i64 = rusqlite_count(&dir.path().join("exec.db"));
    assert_eq!(rows, 2);
    // Without a store, List is a typed error.
    let plain = server().await;
    let err = client(&plain).await.list(1).await.unwrap_err();
    assert!(matches!(err, ExecError::Rpc(RpcError::Remote { code: ErrorCode::InvalidRequest, .. })), "{err:?}");
}

fn rusqlite_count(path: &std::path::Path) -> i64 {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from processes').fetchone()[0])"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_lists_processes_connections_and_last_output() {
    let s = server().await;
    assert_eq!(s.server.snapshot().connections, 0);
    let c = client(&s).await;
    let talker = c.start(argv(&["sh", "-c", "echo hi; exec sleep 30"])).await.unwrap();
    let quiet = c.start(argv(&["sleep", "30"])).await.unwrap();
    // The talker's output has been read once its snapshot shows it.
    let snap = eventually_some_async(WITHIN, || async {
        Some(s.server.snapshot()).filter(|snap| snap.processes.iter().any(|p| p.last_output.is_some()))
    })
    .await
    .unwrap_or_else(|e| panic!("no output recorded: {e}"));
    assert_eq!(snap.connections, 1);
    assert_eq!(snap.subscribers, 1);
    assert_eq!(snap.store_backlog, None);
    assert_eq!(snap.processes.len(), 2);
    let (t, q) = (&snap.processes[0], &snap.processes[1]);
    assert_eq!((t.process_id, t.pid), (talker.process_id, talker.pid));
    assert_eq!(q.argv, ["sleep", "30"]);
    assert!(snap.processes.iter().all(|p| p.state == tracewire_exec::ProcessState::Running));
    assert!(t.last_output.is_some_and(|at| at >= t.started));
    assert_eq!(q.last_output, None);
    // Never wrote: idle since its start.
    let now = std::time::Instant::now();
    assert_eq!(q.idle(now), now - q.started);

    c.kill(talker.process_id).await.unwrap();
    c.kill(quiet.process_id).await.unwrap();
    talker.wait_with_output().await.unwrap();
    quiet.wait_with_output().await.unwrap();
    assert!(s.server.snapshot().processes.is_empty());
    drop(c);
    eventually_async(WITHIN, || async { s.server.snapshot().connections == 0 })
        .await
        .expect("the connection is still counted");
}
