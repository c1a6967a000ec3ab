//! The executor's functions as the lease looks them up on every call: by fingerprint in
//! constant time, however many functions the library has, then confirmed by name.
//!
//! A scan of the list costs a comparison per function before the match, on every invocation:
//! nothing to speak of for the handful of functions in our examples, but it grows with the
//! library. The table is open addressing with linear probing, at most half full (so every
//! probe sequence ends at an empty cell), indexed by the fingerprint's Fibonacci hash (a
//! fingerprint is an FNV-1a hash, whose low bits alone are weak).

use crate::wire::FunctionInfo;

/// Fibonacci hashing's multiplier: 2^64 divided by the golden ratio, odd.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Debug)]
pub(super) struct FunctionTable {
    list: Vec<FunctionInfo>,
    /// Position in `list` plus one at each cell; 0: empty. Length `1 << bits`.
    cells: Box<[u32]>,
    bits: u32,
}

impl FunctionTable {
    /// Indexes `list` (as the executor sent it; duplicates are kept, the first one wins).
    pub(super) fn new(list: Vec<FunctionInfo>) -> Self {
        // At least twice as many cells as functions, at least 8.
        let bits = (list.len().max(4) * 2).next_power_of_two().trailing_zeros();
        let mut cells = vec![0u32; 1 << bits].into_boxed_slice();
        let mask = cells.len() - 1;
        for (i, f) in list.iter().enumerate() {
            let mut k = home(f.fingerprint, bits);
            while cells[k] != 0 {
                k = (k + 1) & mask;
            }
            // Fits: a welcome is at most `MAX_CONTROL_MESSAGE` (16 MiB) of JSON, so it lists
            // far fewer than 2^32 functions.
            cells[k] = i as u32 + 1;
        }
        FunctionTable { list, cells, bits }
    }

    /// Every function, in the executor's order.
    pub(super) fn list(&self) -> &[FunctionInfo] {
        &self.list
    }

    /// The function with this fingerprint and this name, if the executor has it.
    pub(super) fn find(&self, fingerprint: u64, name: &str) -> Option<&FunctionInfo> {
        let mask = self.cells.len() - 1;
        let mut k = home(fingerprint, self.bits);
        loop {
            let at = self.cells[k];
            if at == 0 {
                return None;
            }
            let f = &self.list[at as usize - 1];
            if f.fingerprint == fingerprint && f.name == name {
                return Some(f);
            }
            k = (k + 1) & mask;
        }
    }
}

/// The cell a fingerprint's probe sequence starts at: the top `bits` bits of its Fibonacci
/// hash.
fn home(fingerprint: u64, bits: u32) -> usize {
    (fingerprint.wrapping_mul(GOLDEN) >> (64 - bits)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(index: u32, name: &str, fingerprint: u64) -> FunctionInfo {
        FunctionInfo {
            index,
            name: name.to_owned(),
            fingerprint,
        }
    }

    #[test]
    fn finds_each_of_many_functions_and_nothing_else() {
        // Fingerprints from a simple mixing sequence, and some sharing their low bits.
        let list: Vec<FunctionInfo> = (0..1000u32)
            .map(|i| {
                let fp = if i % 3 == 0 {
                    u64::from(i) << 40
                } else {
                    u64::from(i).wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ 0x1234
                };
                info(i, &format!("f{i}"), fp)
            })
            .collect();
        let table = FunctionTable::new(list.clone());
        assert_eq!(table.list(), &list[..]);
        for f in &list {
            let found = table.find(f.fingerprint, &f.name).expect("present");
            assert_eq!(found.index, f.index);
        }
        assert!(
            table.find(list[7].fingerprint, "f8").is_none(),
            "right hash, wrong name"
        );
        assert!(
            table.find(0xFFFF_FFFF_FFFF_FFFF, "f7").is_none(),
            "unknown hash"
        );
    }

    #[test]
    fn functions_sharing_a_fingerprint_are_told_apart_by_name() {
        let list = vec![
            info(0, "a", 42),
            info(1, "b", 42),
            info(2, "c", 42),
            info(3, "d", 7),
        ];
        let table = FunctionTable::new(list);
        for (name, index) in [("a", 0), ("b", 1), ("c", 2)] {
            assert_eq!(table.find(42, name).map(|f| f.index), Some(index));
        }
        assert_eq!(table.find(7, "d").map(|f| f.index), Some(3));
        assert!(table.find(42, "d").is_none());
    }

    #[test]
    fn an_empty_library_finds_nothing() {
        let table = FunctionTable::new(Vec::new());
        assert!(table.list().is_empty());
        assert!(table.find(0, "").is_none());
        assert!(table.find(u64::MAX, "noop").is_none());
    }

    #[test]
    fn the_table_stays_at_most_half_full() {
        for n in [0usize, 1, 3, 4, 5, 8, 9, 100, 1025] {
            let list = (0..n as u32).map(|i| info(i, "x", u64::from(i))).collect();
            let table = FunctionTable::new(list);
            assert!(
                table.cells.len() >= 2 * n && table.cells.len() >= 8,
                "n = {n}"
            );
            assert!(table.cells.len().is_power_of_two());
        }
    }
}
