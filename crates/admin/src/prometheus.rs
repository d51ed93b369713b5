//! [`Metrics`] in the Prometheus text exposition format (version 0.0.4), as
//! `GET /api/metrics/prometheus` serves it.

use crate::metrics::{Metrics, WorkerMetrics};

/// A worker metric: name, help, value (left out when `None`).
type Series = (&'static str, &'static str, fn(&WorkerMetrics) -> Option<f64>);

/// Escapes a Prometheus label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Metrics {
    /// The same figures in the Prometheus text exposition format (version 0.0.4). Unknown
    /// values (`null` in JSON) are left out. Worker series are labelled with `process_id`,
    /// `pid` and `command` (`argv[0]` only: arguments may hold secrets).
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, value: Option<f64>| {
            if let Some(v) = value {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
            }
        };
        #[allow(clippy::cast_precision_loss)]
        let f = |v: usize| Some(v as f64);
        #[allow(clippy::cast_precision_loss)]
        let g = |v: Option<u64>| v.map(|v| v as f64);
        let s = &self.server;
        gauge(
            "tracewire_exec_server_uptime_seconds",
            "Seconds since the server started.",
            "gauge",
            Some(s.uptime_seconds),
        );
        gauge(
            "tracewire_exec_server_resident_memory_bytes",
            "Resident set size of the server.",
            "gauge",
            g(s.rss_bytes),
        );
        gauge(
            "tracewire_exec_server_cpu_percent",
            "CPU% of the server since the previous sample.",
            "gauge",
            s.cpu_percent,
        );
        gauge(
            "tracewire_exec_server_tokio_tasks_alive",
            "Tokio tasks alive in the server's runtime.",
            "gauge",
            s.tokio_tasks_alive.and_then(f),
        );
        gauge("tracewire_exec_server_connections", "Client connections open.", "gauge", f(s.connections));
        gauge("tracewire_exec_server_subscribers", "Connections receiving pushed events.", "gauge", f(s.subscribers));
        gauge("tracewire_exec_server_processes", "Child processes held.", "gauge", f(s.processes));
        gauge(
            "tracewire_exec_server_dispatch_queue_depth",
            "Requests waiting for a worker.",
            "gauge",
            f(s.dispatch_queue_depth),
        );
        gauge(
            "tracewire_exec_server_delivery_queue_depth",
            "Responses and notifications waiting for the transport.",
            "gauge",
            f(s.delivery_queue_depth),
        );
        gauge(
            "tracewire_exec_server_dropped_spans_total",
            "Spans the telemetry pipeline dropped.",
            "counter",
            g(s.dropped_spans),
        );
        gauge("tracewire_exec_server_store_backlog", "Records queued for the store.", "gauge", g(s.store_backlog));

        let workers: Vec<(String, &WorkerMetrics)> = self
            .workers
            .iter()
            .map(|w| {
                let command = w.argv.first().map_or("", String::as_str);
                (format!("process_id=\"{}\",pid=\"{}\",command=\"{}\"", w.process_id, w.pid, label(command)), w)
            })
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let series: [Series; 8] = [
            ("tracewire_exec_worker_cpu_percent", "CPU% of a child since the previous sample.", |w| w.cpu_percent),
            ("tracewire_exec_worker_resident_memory_bytes", "Resident set size of a child.", |w| {
                w.rss_bytes.map(|v| v as f64)
            }),
            (
                "tracewire_exec_worker_tree_cpu_percent",
                "CPU% of a child with its descendants (reaped ones included) since the previous sample.",
                |w| w.tree_cpu_percent,
            ),
            (
                "tracewire_exec_worker_tree_resident_memory_bytes",
                "Resident set size of a child and its live descendants.",
                |w| w.tree_rss_bytes.map(|v| v as f64),
            ),
            ("tracewire_exec_worker_descendants", "Live processes below a child.", |w| w.descendants.map(|v| v as f64)),
            ("tracewire_exec_worker_start_time_seconds", "Spawn time of a child, seconds since the Unix epoch.", |w| {
                Some(w.started_unix_ms as f64 / 1000.0)
            }),
            ("tracewire_exec_worker_idle_seconds", "Seconds since a child last wrote output.", |w| {
                Some(w.idle_seconds)
            }),
            ("tracewire_exec_worker_zombie", "1 when a child is exited-but-unreaped or idle past the reap TTL.", |w| {
                Some(if w.zombie { 1.0 } else { 0.0 })
            }),
        ];
        for (name, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, w) in &workers {
                if let Some(v) = value(w) {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        out
    }
}
