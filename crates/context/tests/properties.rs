//! Property tests: parsers never panic; canonical values round-trip exactly.

use proptest::prelude::*;
use tracewire_context::{Baggage, TraceParent, TraceState};

fn hex(n: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(b"0123456789abcdef".to_vec()), n)
        .prop_map(|v| String::from_utf8(v).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn traceparent_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = TraceParent::parse_bytes(&bytes);
    }

    #[test]
    fn traceparent_near_valid_never_panics(s in "[0-9a-fA-F\\- \\t]{50,60}") {
        let _ = TraceParent::parse(&s);
    }

    #[test]
    fn canonical_traceparent_round_trips(tid in hex(32), sid in hex(16), flags in 0u8..4) {
        prop_assume!(tid != "0".repeat(32) && sid != "0".repeat(16));
        let s = format!("00-{tid}-{sid}-{flags:02x}");
        let p = TraceParent::parse(&s).unwrap();
        let enc = p.encode();
        prop_assert_eq!(enc.as_str(), s.as_str());
        prop_assert_eq!(p.to_string(), s);
    }

    #[test]
    fn tracestate_parse_never_panics(s in any::<String>()) {
        let _ = TraceState::parse(&s);
    }

    #[test]
    fn canonical_tracestate_round_trips(
        members in proptest::collection::btree_map("[a-z0-9][a-z0-9_\\-*/@]{0,20}", "[!-+\\--<>-~][ -+\\--<>-~]{0,20}[!-+\\--<>-~]", 0..32)
    ) {
        let s = members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let ts = TraceState::parse(&s).unwrap();
        prop_assert_eq!(ts.len(), members.len());
        if s.len() <= 512 {
            prop_assert_eq!(ts.header(), s);
        } else {
            prop_assert!(ts.header().len() <= 512);
        }
    }

    #[test]
    fn baggage_parse_never_panics(s in any::<String>()) {
        let _ = Baggage::parse(&s);
    }

    #[test]
    fn baggage_values_round_trip(entries in proptest::collection::btree_map("[A-Za-z0-9!#$&'*+.^_`|~-]{1,12}", any::<String>(), 0..10)) {
        let mut b = Baggage::new();
        for (k, v) in &entries {
            b.insert(k, v).unwrap();
        }
        let parsed = Baggage::parse(&b.header());
        prop_assert_eq!(parsed.dropped, 0);
        prop_assert_eq!(parsed.baggage, b);
    }
}
