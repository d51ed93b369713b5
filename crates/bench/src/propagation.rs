//! traceparent parse and format: tracewire-context against opentelemetry_sdk's
//! `TraceContextPropagator` (extract / inject through a `HashMap` carrier).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use anyhow::Result;
use tracewire_context::TraceParent;

use crate::fixtures::{PropagationInputs, TRACEPARENT};
use crate::{Row, Scale, alloc};

/// Nanoseconds and allocations per call of `f`, best of five rounds of `n`.
fn measure(n: u64, mut f: impl FnMut()) -> (f64, f64) {
    let mut best = f64::INFINITY;
    let mut allocs = 0.0;
    for _ in 0..5 {
        let a0 = alloc::count();
        let t0 = Instant::now();
        for _ in 0..n {
            f();
        }
        #[allow(clippy::cast_precision_loss)]
        let ns = t0.elapsed().as_nanos() as f64 / n as f64;
        #[allow(clippy::cast_precision_loss)]
        let a = (alloc::count() - a0) as f64 / n as f64;
        if ns < best {
            best = ns;
            allocs = a;
        }
    }
    (best, allocs)
}

#[allow(clippy::unnecessary_wraps)] // every comparison has the same signature
pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let n = scale.pick(300_000, 3_000_000);
    let inputs = PropagationInputs::default();
    let (ours_parse, ours_parse_alloc) = measure(n, || {
        black_box(TraceParent::parse(black_box(TRACEPARENT)).ok());
    });
    let (sdk_parse, sdk_parse_alloc) = measure(n, || {
        black_box(inputs.sdk_extract());
    });
    let (ours_fmt, ours_fmt_alloc) = measure(n, || {
        black_box(black_box(&inputs.traceparent).encode());
    });
    let mut out: HashMap<String, String> = HashMap::with_capacity(4);
    let (sdk_fmt, sdk_fmt_alloc) = measure(n, || inputs.sdk_inject(&mut out));
    Ok(vec![
        Row::lower_is_better(
            "traceparent.parse",
            ours_parse,
            sdk_parse,
            "ns/op",
            20.0,
            &format!("vs SDK extract; allocations/op {ours_parse_alloc:.1} vs {sdk_parse_alloc:.1}"),
        ),
        Row::lower_is_better(
            "traceparent.format",
            ours_fmt,
            sdk_fmt,
            "ns/op",
            20.0,
            &format!("vs SDK inject; allocations/op {ours_fmt_alloc:.1} vs {sdk_fmt_alloc:.1}"),
        ),
    ])
}
