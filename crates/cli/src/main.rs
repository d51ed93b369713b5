//! `tracewire`: where did the time go in commands run remotely? Runs remote execs with
//! W3C Trace Context carried end to end (directly or through a Noise-encrypted relay) and
//! answers from their spans.
//!
//! ```text
//! tracewire demo [--execs 50] [--via relay|direct] [--out tracewire-demo] [--slo 'e2e.p99<=250ms']
//!
//! tracewire exec-server --listen 127.0.0.1:7070          # or --listen unix:/path/to.sock
//! tracewire exec-server --admin 127.0.0.1:7090 --admin-token-file admin.token   # + dashboard
//! tracewire exec --server 127.0.0.1:7070 [--print-trace-id] [--timeout 30s] -- CMD [ARGS...]
//! tracewire relay --listen 127.0.0.1:7080 [--token T] [--idle-timeout 30s]
//! tracewire keygen --out server.key                      # server.key (0600) + server.key.pub
//! tracewire exec-server --relay http://127.0.0.1:7080 --session S --key server.key [--token T]
//! tracewire exec --relay http://127.0.0.1:7080 --session S --server-key server.key.pub [--token T] -- CMD
//!
//! tracewire collect --grpc 127.0.0.1:4317 --http 127.0.0.1:4318 [--db traces.db [--retain 7d] [--max-spans N]] [--out DIR]
//! tracewire report --db traces.db [--slo ...] [--slo-file slo.toml] [--out DIR]
//! tracewire report --otlp-json traces.jsonl --jaeger-json trace.json [--otlp-json ...] [--out DIR]
//! tracewire diff BASE NEW [--json OUT] [--out DIR] [--fail-on 'e2e.p90>+10%']... [--confidence 0.95] [--seed N]
//! tracewire export --db traces.db (--otlp-json OUT | --otlp-endpoint URL [--protocol http|grpc]) [--trace ID] [--since T] [--until T]
//! ```
//!
//! Each subcommand is a module with its arguments (a clap `Args` struct) and its `run`;
//! this file parses, dispatches, and sets up what they share: the runtime, telemetry for
//! the subcommands that serve or run execs (`exec-server`, `exec`, `relay`, `keygen`,
//! configured by the `OTEL_*` variables), and the exit status. Durations are written one
//! way (`250ms`, `30s`, `5m`, `7d`; `flags.rs`). `exec-server`, `relay` and `collect` serve
//! until SIGINT or SIGTERM, then stop gracefully (`shutdown.rs`); a second signal exits at
//! once.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod collect;
mod demo;
mod diff;
mod exec;
mod exec_server;
mod export;
mod flags;
mod inputs;
mod keygen;
mod relay;
mod report;
mod shutdown;

/// tracewire: where did the time go in commands run remotely?
#[derive(Parser)]
#[command(
    name = "tracewire",
    version,
    about = "Distributed tracing for remote execution: where did the time go in commands run remotely?",
    long_about = "Distributed tracing for remote execution: where did the time go in commands run remotely?\n\n\
        tracewire runs commands on exec-servers (directly or through a Noise-encrypted relay), carries \
        W3C Trace Context end to end, and reports from the spans where the time went, stage by stage. \
        `tracewire demo` does it all in one process. Durations are written 250ms, 30s, 5m, 7d."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands, in the order `--help` lists them: the main job, then serving and
/// running execs, then analysing spans.
#[derive(Subcommand)]
enum Command {
    /// The main job: run N remote execs in one process and say where the time went.
    ///
    /// An embedded collector, a relay, an exec-server and a client in one
    /// process; runs N remote execs, then says where the time went and writes
    /// DIR/summary.json, DIR/report.html and DIR/traces.jaeger.json. Without --slo or
    /// --slo-file it checks e2e.p90<=250ms, first_output.p90<=50ms and process.spawn.p50<=5ms
    /// (p90, not p99, for the end to end: with 50 execs p99 is the first, cold one).
    Demo(demo::DemoArgs),
    /// Serve remote execs (TCP or a Unix socket, or behind a relay).
    ///
    /// SIGINT or SIGTERM stops it gracefully: no new connections or
    /// processes, the running ones get --drain-timeout to finish (then they are killed),
    /// telemetry is flushed (within TRACEWIRE_SHUTDOWN_TIMEOUT_MS), exit status 0. A second
    /// signal exits at once (130 for SIGINT, 143 for SIGTERM).
    ExecServer(exec_server::ExecServerArgs),
    /// Run a command on an exec-server, streaming its output.
    ///
    /// Exits with its exit code
    /// (128 + signal when a signal ended it). Continues the trace of a `TRACEPARENT` (with
    /// `TRACESTATE`, `BAGGAGE`) in its environment. Through a relay, a retryable refusal
    /// (the session serves its limit of clients, or no exec-server is attached yet) is
    /// retried after 50 ms, doubling up to 1 s (jittered), for at most 10 s in all; then
    /// exec fails naming the reason.
    Exec(exec::ExecArgs),
    /// Run a relay: pairs clients and exec-servers by session and forwards ciphertext.
    ///
    /// SIGINT or SIGTERM stops it gracefully: no new attachments, every session reset
    /// (both ends told), connections closed within 5 s, telemetry flushed, exit status 0.
    /// A second signal exits at once.
    Relay(relay::RelayArgs),
    /// Write a new static key pair for an exec-server behind a relay.
    ///
    /// The private key to PATH (mode 0600), the public key to
    /// PATH.pub.
    Keygen(keygen::KeygenArgs),
    /// Receive OTLP spans (gRPC and HTTP) until stopped, into memory and SQLite.
    ///
    /// Protobuf or JSON, until SIGINT/SIGTERM, keeping them in memory and, with --db, in SQLite for `tracewire report`. On the signal it
    /// stops accepting, gives exports in flight up to 5 s, commits what it received to the
    /// database, then writes the report (with --out). A second signal exits at once.
    Collect(collect::CollectArgs),
    /// Say where the time went in stored spans: a database, OTLP JSON or Jaeger JSON.
    ///
    /// The report of the spans in a database written by `tracewire collect --db`, in OTLP
    /// JSON files (the OpenTelemetry Collector's file exporter) or in Jaeger JSON files (the
    /// Jaeger UI's download), any number of each, combined: the stage table,
    /// DIR/summary.json, DIR/report.html, DIR/traces.jaeger.json. Exit status 3 when an SLO
    /// fails.
    Report(report::ReportArgs),
    /// Compare two runs stage by stage and say what got slower.
    ///
    /// BASE and NEW ( databases, OTLP JSON or Jaeger JSON files, or
    /// directories written by `demo`), stage by stage: p50/p90/p99 on each side, the change
    /// with its bootstrap interval, a Mann-Whitney test corrected for the stages compared
    /// (Holm), and a verdict per stage (slower, faster, unchanged); `docs/diff.md`. Exit
    /// status 3 when a --fail-on gate is violated, 2 for a malformed argument.
    Diff(diff::DiffArgs),
    /// Write stored spans as OTLP JSON, or replay them into any OTLP backend.
    ///
    /// Write the stored spans as OTLP JSON lines (--otlp-json), or replay them into any
    /// OTLP backend (--otlp-endpoint: Jaeger v2, Tempo, an OpenTelemetry Collector, another
    /// `tracewire collect`) in batches over OTLP/HTTP or OTLP/gRPC, retrying what the
    /// backend asks to retry, then print how many spans it accepted and rejected. SIGINT or
    /// SIGTERM stops a replay between batches. Exit status 0 when every span was accepted
    /// (or written), 3 when the backend rejected spans or the export was stopped before the
    /// end, 1 on an error (e.g. the backend unreachable for --retry-for), 2 for a
    /// malformed argument.
    Export(export::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tracewire: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Work still running (a connection past its grace, a blocking read of stdin, a CPU
    // profile) does not hold up the exit.
    runtime.shutdown_timeout(shutdown::KILL_GRACE);
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            eprintln!("tracewire: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the subcommand; its exit status. `demo` sets up its own telemetry; `collect`,
/// `report`, `diff` and `export` analyse spans rather than emit them.
async fn run(command: Command) -> Result<i32> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::ExecServer(args) => traced(|t| exec_server::run(args, t.export_stats())).await,
        Command::Exec(args) => traced(|_| exec::run(args)).await,
        Command::Relay(args) => traced(|_| relay::run(args)).await,
        Command::Keygen(args) => traced(|_| async move { keygen::run(&args) }).await,
        Command::Collect(args) => collect::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::Diff(args) => diff::run(args).await,
        Command::Export(args) => export::run(args).await,
    }
}

/// Runs `command` with telemetry configured by the `OTEL_*` variables, then flushes it
/// (within TRACEWIRE_SHUTDOWN_TIMEOUT_MS), saying on stderr when that fails.
async fn traced<F: Future<Output = Result<i32>>>(
    command: impl FnOnce(&tracewire_telemetry::TelemetryGuard) -> F,
) -> Result<i32> {
    let telemetry = tracewire_telemetry::init(tracewire_telemetry::Config::from_env()?)?;
    let code = command(&telemetry).await;
    if let Err(tracewire_telemetry::Error::Shutdown { reason, stats, .. }) = telemetry.shutdown() {
        eprintln!("tracewire: telemetry shutdown: {reason} ({} spans dropped)", stats.dropped());
    }
    code
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("tracewire").chain(args.iter().copied())).map(|cli| cli.command)
    }

    #[test]
    fn the_help_says_what_tracewire_is_and_lists_the_main_job_first() {
        let mut cli = Cli::command();
        let help = cli.render_long_help().to_string();
        assert!(help.contains("where did the time go"), "{help}");
        assert!(!help.contains("Both export"), "{help}");
        let order: Vec<&str> = cli.get_subcommands().map(clap::Command::get_name).filter(|n| *n != "help").collect();
        assert_eq!(order, ["demo", "exec-server", "exec", "relay", "keygen", "collect", "report", "diff", "export"]);
        for sub in cli.get_subcommands() {
            let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
            assert!(!about.is_empty() && about.len() < 90, "{}: a one-line summary, not {about:?}", sub.get_name());
        }
        let listed: Vec<usize> = order.iter().map(|name| help.find(&format!("\n  {name} ")).unwrap()).collect();
        assert!(listed.is_sorted(), "{help}");
    }

    #[test]
    fn a_bad_address_is_a_usage_error_naming_the_flag_and_the_forms() {
        for args in [
            &["exec-server", "--listen", "localhost:7070"][..],
            &["exec", "--server", "nowhere", "--", "true"],
            &["relay", "--listen", "unix:/tmp/relay.sock"],
            &["exec-server", "--admin", "7090"],
            &["collect", "--grpc", "localhost:4317"],
        ] {
            let e = parse(args).err().unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{args:?}");
            let text = e.to_string();
            assert!(text.contains(args[1]) && text.contains("HOST:PORT"), "{args:?}: {text}");
        }
        assert!(parse(&["exec-server", "--listen", "unix:/tmp/x.sock"]).is_ok());
    }

    #[test]
    fn durations_take_units_and_the_old_spellings_keep_their_units() {
        let Command::ExecServer(a) = parse(&["exec-server", "--drain-timeout", "300ms"]).unwrap() else { panic!() };
        assert_eq!(a.drain_timeout(), Duration::from_millis(300));
        let Command::ExecServer(a) = parse(&["exec-server", "--drain-timeout-ms", "300"]).unwrap() else { panic!() };
        assert_eq!(a.drain_timeout(), Duration::from_millis(300));
        assert!(parse(&["exec-server", "--drain-timeout", "300"]).is_err(), "a bare number has no unit");
        assert!(parse(&["relay", "--idle-timeout", "2s"]).is_ok());
        assert!(parse(&["relay", "--idle-timeout-ms", "2000"]).is_ok());
        assert!(parse(&["exec", "--timeout", "5m", "--", "true"]).is_ok());
        assert!(parse(&["exec", "--timeout-ms", "5000", "--", "true"]).is_ok());
        assert!(
            parse(&["export", "--db", "x.db", "--otlp-json", "-", "--retry-for", "1500ms", "--timeout", "2s"]).is_ok()
        );
        assert!(
            parse(&["export", "--db", "x.db", "--otlp-json", "-", "--retry-for-ms", "1500", "--timeout-ms", "2000"])
                .is_ok()
        );
        assert!(parse(&["exec-server", "--reap-ttl", "300"]).is_ok(), "--reap-ttl SECONDS");
        assert!(parse(&["exec-server", "--reap-ttl", "5m"]).is_ok());
        assert!(parse(&["collect", "--db", "x.db", "--retain", "7d", "--prune-every", "1"]).is_ok());
        assert!(parse(&["collect", "--db", "x.db", "--prune-every", "0s"]).is_err());
        // The old spellings are hidden: the help shows one form.
        let help = Cli::command().find_subcommand_mut("exec-server").unwrap().render_long_help().to_string();
        assert!(help.contains("--drain-timeout <DURATION>") && !help.contains("drain-timeout-ms"), "{help}");
    }
}
