//! Random ids: a thread-local wyrand generator seeded from std's `RandomState` (no extra
//! dependency, no I/O).

use std::cell::Cell;

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

/// A per-thread seed from the standard library's randomly keyed hasher (itself seeded from
/// the operating system once per thread), mixed with the time and the thread id, so that no
/// extra dependency or I/O is needed.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::thread::current().id().hash(&mut h);
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        d.as_nanos().hash(&mut h);
    }
    h.finish()
}

/// wyrand: a fast 64-bit generator with good statistical quality.
fn next_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        #[allow(clippy::cast_possible_truncation)]
        let r = (t >> 64) as u64 ^ t as u64;
        r
    })
}

/// Fills `out` with random bytes from this thread's generator.
pub(crate) fn fill_random(out: &mut [u8]) {
    for chunk in out.chunks_mut(8) {
        let r = next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use crate::{SpanId, TraceId};

    #[test]
    fn random_ids_differ_and_are_valid() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| TraceId::random()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|i| i.is_valid()));
    }

    #[test]
    fn random_ids_differ_across_threads() {
        let a = std::thread::spawn(SpanId::random).join().unwrap();
        let b = std::thread::spawn(SpanId::random).join().unwrap();
        assert_ne!(a, b);
    }
}
