//! Table tests for every traceparent rule, valid and invalid cases side by side.

use tracewire_context::{SpanId, TraceFlags, TraceId, TraceParent, TraceParentError as E};

const TID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SID: &str = "00f067aa0ba902b7";

fn tp(version: &str, tid: &str, sid: &str, flags: &str) -> String {
    format!("{version}-{tid}-{sid}-{flags}")
}

#[test]
fn valid_values_parse_to_their_fields() {
    let cases: Vec<(String, u8)> = vec![
        (tp("00", TID, SID, "01"), 0x01),
        (tp("00", TID, SID, "00"), 0x00),
        (tp("00", TID, SID, "03"), 0x03),
        // Unknown flag bits are accepted (and kept until sent).
        (tp("00", TID, SID, "ff"), 0xff),
        // Whitespace around the value is stripped.
        (format!("  {}\t", tp("00", TID, SID, "01")), 0x01),
        (format!("\t{}", tp("00", TID, SID, "01")), 0x01),
        // A future version: exactly 55 characters, or followed by '-' and anything.
        (tp("01", TID, SID, "01"), 0x01),
        (tp("cc", TID, SID, "09"), 0x09),
        (format!("{}-", tp("cc", TID, SID, "01")), 0x01),
        (format!("{}-what-the-future-holds", tp("fe", TID, SID, "01")), 0x01),
    ];
    for (input, flags) in cases {
        let p = TraceParent::parse(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(p.trace_id, TraceId::from_hex(TID).unwrap(), "{input:?}");
        assert_eq!(p.parent_id, SpanId::from_hex(SID).unwrap(), "{input:?}");
        assert_eq!(p.flags.bits(), flags, "{input:?}");
        assert_eq!(TraceParent::parse_bytes(input.as_bytes()), Ok(p), "bytes and str agree for {input:?}");
    }
}

#[test]
fn invalid_values_are_rejected_with_a_reason() {
    let zero_tid = "0".repeat(32);
    let zero_sid = "0".repeat(16);
    let cases: Vec<(String, E)> = vec![
        // Uppercase hex anywhere.
        (tp("00", &TID.to_uppercase(), SID, "01"), E::TraceId),
        (tp("00", TID, &SID.to_uppercase(), "01"), E::ParentId),
        (tp("00", TID, SID, "0A"), E::Flags),
        (tp("0A", TID, SID, "01"), E::Version),
        // Non-hex characters.
        (tp("00", &TID.replace('4', "g"), SID, "01"), E::TraceId),
        (tp("00", TID, &SID.replace('a', "z"), "01"), E::ParentId),
        (tp("0x", TID, SID, "01"), E::Version),
        (tp("00", TID, SID, "0-"), E::Flags),
        // Zero ids.
        (tp("00", &zero_tid, SID, "01"), E::ZeroTraceId),
        (tp("00", TID, &zero_sid, "01"), E::ZeroParentId),
        // Version ff is never valid, even with the right length.
        (tp("ff", TID, SID, "01"), E::VersionFf),
        // Wrong lengths.
        (String::new(), E::Length(0)),
        (tp("00", &TID[1..], SID, "01"), E::Length(54)),
        (tp("00", &format!("{TID}0"), SID, "01"), E::Length(56)),
        (tp("00", TID, &format!("{SID}0"), "01"), E::Length(56)),
        (tp("00", TID, SID, "001"), E::Length(56)),
        // Version 00 with trailing data is invalid; a future version needs '-' after 55.
        (format!("{}-", tp("00", TID, SID, "01")), E::Length(56)),
        (format!("{}-extra", tp("00", TID, SID, "01")), E::Length(61)),
        (format!("{}x", tp("cc", TID, SID, "01")), E::TrailingData),
        (format!("{}0", tp("cc", TID, SID, "01")), E::TrailingData),
        // Separators.
        (tp("00", TID, SID, "01").replacen('-', "_", 1), E::Separator(2)),
        (format!("00-{TID}.{SID}-01"), E::Separator(35)),
        (format!("00-{TID}-{SID}.01"), E::Separator(52)),
        // Whitespace inside the value is not stripped.
        (format!("00- {}-{SID}-01", &TID[1..]), E::TraceId),
    ];
    for (input, want) in cases {
        assert_eq!(TraceParent::parse(&input), Err(want), "{input:?}");
    }
}

#[test]
fn several_traceparent_headers_are_invalid() {
    let v = tp("00", TID, SID, "01");
    assert_eq!(TraceParent::from_header_values([v.as_str(), v.as_str()]), Err(E::Multiple));
    assert!(TraceParent::from_header_values([v.as_str()]).unwrap().is_some());
    assert_eq!(TraceParent::from_header_values(Vec::<&str>::new()), Ok(None));
    // Two values folded into one header (a proxy joined them with a comma) are invalid too.
    assert!(TraceParent::parse(&format!("{v},{v}")).is_err());
}

#[test]
fn outgoing_is_version_00_with_unknown_flags_cleared() {
    let cases = [
        (tp("00", TID, SID, "01"), tp("00", TID, SID, "01")),
        (tp("00", TID, SID, "ff"), tp("00", TID, SID, "03")),
        (tp("00", TID, SID, "fd"), tp("00", TID, SID, "01")),
        (tp("cc", TID, SID, "0a"), tp("00", TID, SID, "02")),
        (format!("{}-future", tp("cc", TID, SID, "01")), tp("00", TID, SID, "01")),
        (format!(" {} ", tp("00", TID, SID, "00")), tp("00", TID, SID, "00")),
    ];
    for (input, want) in cases {
        let p = TraceParent::parse(&input).unwrap();
        assert_eq!(p.encode().as_str(), want);
        assert_eq!(p.to_string(), want);
        assert_eq!(p.encode().len(), 55);
    }
}

#[test]
fn flags_api() {
    let f = TraceFlags::from_bits(0x02);
    assert!(f.is_random() && !f.is_sampled());
    assert_eq!(f.with_sampled(true).bits(), 0x03);
    assert_eq!(f.with_sampled(true).with_random(false).bits(), 0x01);
    assert_eq!((TraceFlags::SAMPLED | TraceFlags::RANDOM), TraceFlags::KNOWN);
}

#[test]
fn ids_round_trip_through_integers_and_hex() {
    let t = TraceId::from_hex(TID).unwrap();
    assert_eq!(TraceId::from_u128(t.to_u128()), t);
    assert_eq!(t.to_u128(), 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
    let s = SpanId::from_hex(SID).unwrap();
    assert_eq!(SpanId::from_u64(s.to_u64()), s);
    assert_eq!(format!("{s:?}"), "SpanId(00f067aa0ba902b7)");
    assert!(TraceId::from_hex(&TID[1..]).is_none());
    assert!(!TraceId::INVALID.is_valid() && !SpanId::INVALID.is_valid());
}
