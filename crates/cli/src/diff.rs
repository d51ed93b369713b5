//! `tracewire diff BASE NEW`: two runs compared stage by stage (the method:
//! `tracewire_collector::diff`), a table on stdout, `--json OUT`, `--out DIR/diff.html`,
//! and `--fail-on` gates (exit status 3).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tracewire_collector::diff::{
    DEFAULT_RESAMPLES, DEFAULT_SEED, Diff, DiffOptions, FailOn, Row, RunSamples, Threshold, diff,
};
use tracewire_collector::input::{InputError, stream_otlp_json};

use crate::inputs::Sources;

/// `tracewire diff`'s arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct DiffArgs {
    /// The base run: a database (`.db`, from `collect --db` or `demo`), an OTLP JSON file
    /// (`.json`, `.jsonl`, gzip too), a Jaeger JSON file, or a directory written by `demo`
    /// or `collect`/`report` (its `traces.db`, else its `traces.jaeger.json`).
    pub(crate) base: PathBuf,
    /// The new run, in any of the same forms.
    pub(crate) new: PathBuf,
    /// Also write the comparison as JSON to this file.
    #[arg(long, value_name = "OUT")]
    pub(crate) json: Option<PathBuf>,
    /// Write DIR/diff.html: paired bars per stage with interval whiskers.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// A regression gate, 'STAGE.PCT>+N%' or 'STAGE.PCT>+Nms' (STAGE a stage, e2e or
    /// first_output; PCT p50, p90 or p99), e.g. 'e2e.p90>+10%' (repeatable). Exit status 3
    /// when one is violated: the change is significant (Holm-adjusted p-value below
    /// 1 - confidence, the percentile's interval above 0) and over the threshold.
    #[arg(long = "fail-on", value_name = "EXPR", value_parser = parse_fail_on)]
    pub(crate) fail_on: Vec<FailOn>,
    /// The confidence of the intervals and verdicts.
    #[arg(long, default_value_t = 0.95, value_parser = parse_confidence)]
    pub(crate) confidence: f64,
    /// The bootstrap's seed (the same seed gives the same intervals).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub(crate) seed: u64,
    /// The bootstrap's rounds.
    #[arg(long, default_value_t = DEFAULT_RESAMPLES, value_parser = parse_resamples)]
    pub(crate) resamples: usize,
    /// No lines on stderr about what was read, and no progress lines (printed every
    /// 100,000 spans of a large input).
    #[arg(long)]
    pub(crate) quiet: bool,
}

fn parse_fail_on(s: &str) -> Result<FailOn, tracewire_collector::diff::DiffError> {
    s.parse()
}

fn parse_resamples(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (100..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of resamples from 100 to 1000000")),
    }
}

fn parse_confidence(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(c) if c > 0.0 && c < 1.0 => Ok(c),
        _ => Err(format!("{s:?} is not a confidence strictly between 0 and 1 (e.g. 0.95)")),
    }
}

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    Db(PathBuf),
    Json(PathBuf),
}

/// Where the spans of `path` are: a directory's `traces.db`, else its `traces.jaeger.json`
/// (with a warning: it holds only the traces the report exported); a file by its
/// extension, or its first bytes (SQLite's header) when the extension says nothing.
fn form(path: &Path) -> Result<Form> {
    if path.is_dir() {
        let db = path.join("traces.db");
        if db.is_file() {
            return Ok(Form::Db(db));
        }
        let jaeger = path.join("traces.jaeger.json");
        if jaeger.is_file() {
            eprintln!(
                "warning: {} has no traces.db; reading {}, which holds only the traces the report exported (the slowest, the median, those with an error), not the whole run",
                path.display(),
                jaeger.display()
            );
            return Ok(Form::Json(jaeger));
        }
        bail!("{}: a directory without traces.db or traces.jaeger.json", path.display());
    }
    if !path.is_file() {
        bail!("{}: no such file or directory", path.display());
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    match ext.as_str() {
        "db" | "sqlite" | "sqlite3" => Ok(Form::Db(path.to_owned())),
        "json" | "jsonl" | "gz" => Ok(Form::Json(path.to_owned())),
        _ => {
            let mut head = [0u8; 16];
            let n = std::io::Read::read(
                &mut std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
                &mut head,
            )?;
            if head[..n].starts_with(b"SQLite format 3\0") {
                Ok(Form::Db(path.to_owned()))
            } else {
                Ok(Form::Json(path.to_owned()))
            }
        }
    }
}

/// Whether a JSON file is Jaeger JSON rather than OTLP JSON: its first value says (the
/// OTLP reader stops at the first spans it hands on, or at a Jaeger document's start).
fn is_jaeger_json(file: &Path) -> bool {
    matches!(
        stream_otlp_json(file, |_| ControlFlow::Break(())),
        Err(InputError::WrongFormat { found: "Jaeger JSON", .. })
    )
}

/// The per-trace samples of one run, read as `tracewire report` reads its inputs
/// ([`Sources::feed`]): with bounded memory whatever the input's size or form.
async fn load(path: &Path, quiet: bool) -> Result<RunSamples> {
    let t0 = std::time::Instant::now();
    let sources = match form(path)? {
        Form::Db(db) => Sources { db: vec![db], otlp_json: Vec::new(), jaeger_json: Vec::new() },
        Form::Json(file) => {
            let probe = file.clone();
            if tokio::task::spawn_blocking(move || is_jaeger_json(&probe)).await? {
                Sources { db: Vec::new(), otlp_json: Vec::new(), jaeger_json: vec![file] }
            } else {
                Sources { db: Vec::new(), otlp_json: vec![file], jaeger_json: Vec::new() }
            }
        }
    };
    let (samples, _) = sources.feed(quiet, RunSamples::new).await.with_context(|| path.display().to_string())?;
    if !quiet {
        eprintln!(
            "read {} traces ({} spans) from {} in {:.2?}",
            samples.traces,
            samples.spans,
            path.display(),
            t0.elapsed()
        );
    }
    Ok(samples)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |p| format!("{p:+.1}%"))
}

fn print_row(r: &Row) {
    println!(
        "{:<18} {:>5}/{:<5} {:>9.3} {:>9.3} {:>+9.3} {:>8} {:>20} {:>9.3} {:>9.3} {:>+9.3} {:>20} {:>8.4} {:>9}",
        r.stage,
        r.base.count,
        r.new.count,
        r.base.p50_ms,
        r.new.p50_ms,
        r.p50_change_ms,
        pct(r.p50_change_pct),
        format!("[{:+.3}, {:+.3}]", r.p50_ci_ms[0], r.p50_ci_ms[1]),
        r.base.p90_ms,
        r.new.p90_ms,
        r.p90_change_ms,
        format!("[{:+.3}, {:+.3}]", r.p90_ci_ms[0], r.p90_ci_ms[1]),
        r.p_value,
        r.verdict.to_string(),
    );
}

/// The table on stdout.
fn print_table(d: &Diff) {
    let o = &d.options;
    println!(
        "base: {} traces ({:.2}% with errors); new: {} traces ({:.2}% with errors)",
        d.base.traces,
        d.base.error_rate * 100.0,
        d.new.traces,
        d.new.error_rate * 100.0
    );
    println!(
        "{:.0}% intervals: bootstrap over traces ({} resamples, seed {}); p: Mann-Whitney U, Holm-adjusted over {} rows",
        o.confidence * 100.0,
        o.resamples,
        o.seed,
        d.rows().count()
    );
    println!(
        "{:<18} {:>11} {:>9} {:>9} {:>9} {:>8} {:>20} {:>9} {:>9} {:>9} {:>20} {:>8} {:>9}",
        "stage",
        "traces",
        "p50 base",
        "p50 new",
        "p50 ms",
        "p50 %",
        "p50 interval ms",
        "p90 base",
        "p90 new",
        "p90 ms",
        "p90 interval ms",
        "p",
        "verdict"
    );
    print_row(&d.e2e);
    if let Some(f) = &d.first_output {
        print_row(f);
    }
    let mut stages: Vec<&Row> = d.stages.iter().collect();
    stages.sort_by(|a, b| b.base.p50_ms.total_cmp(&a.base.p50_ms).then_with(|| a.stage.cmp(&b.stage)));
    for r in stages {
        print_row(r);
    }
    for (side, list) in [("base", &d.only_in_base), ("new run", &d.only_in_new)] {
        for o in list {
            println!(
                "only in the {side}: {} ({} traces, p50 {:.3} ms, p90 {:.3} ms)",
                o.stage, o.side.count, o.side.p50_ms, o.side.p90_ms
            );
        }
    }
    let mut critical: Vec<&Row> = d.stages.iter().filter(|r| r.critical_share_change.abs() >= 0.005).collect();
    critical.sort_by(|a, b| b.critical_share_change.abs().total_cmp(&a.critical_share_change.abs()));
    if !critical.is_empty() {
        let moves: Vec<String> = critical
            .iter()
            .take(5)
            .map(|r| {
                format!("{} {:.1}% -> {:.1}%", r.stage, r.base.critical_share * 100.0, r.new.critical_share * 100.0)
            })
            .collect();
        println!("critical path share: {}", moves.join(", "));
    }
    let errors: Vec<String> = d
        .rows()
        .filter(|r| r.error_rate_change != 0.0)
        .map(|r| format!("{} {:.2}% -> {:.2}%", r.stage, r.base.error_rate * 100.0, r.new.error_rate * 100.0))
        .collect();
    if !errors.is_empty() {
        println!("error rates: {}", errors.join(", "));
    }
}

/// `tracewire diff`: returns the exit status (0, or 3 when a `--fail-on` is violated; 2
/// when one names a stage neither run has).
pub(crate) async fn run(args: DiffArgs) -> Result<i32> {
    let base = load(&args.base, args.quiet).await?;
    let new = load(&args.new, args.quiet).await?;
    let options = DiffOptions { confidence: args.confidence, seed: args.seed, resamples: args.resamples };
    let t0 = std::time::Instant::now();
    let d = tokio::task::spawn_blocking(move || diff(&base, &new, &options)).await??;
    if !args.quiet {
        eprintln!("compared {} rows in {:.2?}", d.rows().count(), t0.elapsed());
    }
    print_table(&d);
    let mut code = 0;
    let mut gates = Vec::new();
    for rule in &args.fail_on {
        let Some(row) = d.row(&rule.stage) else {
            if d.only_in_base.iter().chain(&d.only_in_new).any(|o| o.stage == rule.stage) {
                println!("--fail-on '{}': {} is in one run only, not compared", rule.expr, rule.stage);
                gates.push(serde_json::json!({"expr": rule.expr, "violated": false, "compared": false}));
                continue;
            }
            let mut names: Vec<&str> = d.rows().map(|r| r.stage.as_str()).collect();
            names.sort_unstable();
            eprintln!(
                "tracewire: --fail-on '{}': no stage {:?} in either run (rows: {})",
                rule.expr,
                rule.stage,
                names.join(", ")
            );
            return Ok(2);
        };
        let violated = d.violates(rule);
        let (change_ms, change_pct, ci) = row.change(rule.pct);
        let threshold = match rule.threshold {
            Threshold::Ms(n) => format!("+{n} ms"),
            Threshold::Pct(n) => format!("+{n}%"),
        };
        println!(
            "--fail-on '{}': {} {change_ms:+.3} ms ({}), interval [{:+.3}, {:+.3}], p {:.4}, threshold {threshold}: {}",
            rule.expr,
            rule.pct,
            pct(change_pct),
            ci[0],
            ci[1],
            row.p_value,
            if violated { "VIOLATED" } else { "ok" }
        );
        gates.push(serde_json::json!({"expr": rule.expr, "violated": violated, "compared": true}));
        if violated {
            code = 3;
        }
    }
    if let Some(path) = &args.json {
        let mut json = serde_json::to_value(&d)?;
        if let Some(object) = json.as_object_mut() {
            object.insert("fail_on".to_owned(), gates.into());
        }
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let page = dir.join("diff.html");
        std::fs::write(&page, tracewire_collector::diff_html::render_diff_html(&d))
            .with_context(|| format!("writing {}", page.display()))?;
        println!("wrote {}", page.display());
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_follow_extensions_and_directories() {
        let dir = tracewire_testkit::TempDir::new("tw-diff-form").unwrap();
        let p = dir.path();
        std::fs::write(p.join("a.jsonl"), "").unwrap();
        std::fs::write(p.join("b"), b"SQLite format 3\0rest").unwrap();
        std::fs::write(p.join("c"), b"{}").unwrap();
        assert_eq!(form(&p.join("a.jsonl")).unwrap(), Form::Json(p.join("a.jsonl")));
        assert_eq!(form(&p.join("b")).unwrap(), Form::Db(p.join("b")));
        assert_eq!(form(&p.join("c")).unwrap(), Form::Json(p.join("c")));
        assert!(form(p).is_err(), "a directory with neither file");
        std::fs::write(p.join("traces.jaeger.json"), "{}").unwrap();
        assert_eq!(form(p).unwrap(), Form::Json(p.join("traces.jaeger.json")));
        std::fs::write(p.join("traces.db"), "").unwrap();
        assert_eq!(form(p).unwrap(), Form::Db(p.join("traces.db")));
        assert!(form(&p.join("missing.db")).is_err());
    }
}
