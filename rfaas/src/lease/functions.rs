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

/// Most functions a welcome may list: as many as a library may export (the executor's loader
/// refuses more).
pub(super) const MAX_FUNCTIONS: usize = 1 << 16;

/// Longest probe sequence a table may have. With fingerprints as an honest executor sends them
/// (hashes of distinct signatures) and the table at most half full, sequences are short: the
/// longest in 20 tables of 65,536 functions with made-up names was 19 to 37 cells. Only
/// fingerprints chosen to collide make long ones, and then building the table (quadratic) and
/// every lookup would cost what that executor likes. Such a welcome is refused.
const MAX_PROBES: usize = 256;

#[derive(Debug)]
pub(super) struct FunctionTable {
    list: Vec<FunctionInfo>,
    /// Position in `list` plus one at each cell; 0: empty. Length `1 << bits`.
    cells: Box<[u32]>,
    bits: u32,
}

impl FunctionTable {
    /// Indexes `list` (as the executor sent it; duplicates are kept, the first one wins).
    /// Refuses more than [`MAX_FUNCTIONS`] functions, or fingerprints that collide so often
    /// that a probe sequence would pass [`MAX_PROBES`] cells.
    pub(super) fn new(list: Vec<FunctionInfo>) -> Result<Self, String> {
        if list.len() > MAX_FUNCTIONS {
            return Err(format!(
                "the executor lists {} functions (at most {MAX_FUNCTIONS})",
                list.len()
            ));
        }
        // At least twice as many cells as functions, at least 8.
        let bits = (list.len().max(4) * 2).next_power_of_two().trailing_zeros();
        let mut cells = vec![0u32; 1 << bits].into_boxed_slice();
        let mask = cells.len() - 1;
        for (i, f) in list.iter().enumerate() {
            let mut k = home(f.fingerprint, bits);
            let mut probes = 1;
            while cells[k] != 0 {
                k = (k + 1) & mask;
                probes += 1;
                if probes > MAX_PROBES {
                    return Err(format!(
                        "the executor's function fingerprints collide: function {i} ({:?}) \
                         would be looked up in more than {MAX_PROBES} probes",
                        f.name
                    ));
                }
            }
            // Fits: at most MAX_FUNCTIONS functions.
            cells[k] = i as u32 + 1;
        }
        Ok(FunctionTable { list, cells, bits })
    }

    /// Every function, in the executor's order.
    pub(super) fn list(&self) -> &[FunctionInfo] {
        &self.list
    }

    /// The function with this fingerprint and this name, if the executor has it. Every
    /// function lies within [`MAX_PROBES`] cells of its home (checked when the table was
    /// built), so no lookup looks further, whatever clusters the fingerprints make.
    pub(super) fn find(&self, fingerprint: u64, name: &str) -> Option<&FunctionInfo> {
        let mask = self.cells.len() - 1;
        let mut k = home(fingerprint, self.bits);
        for _ in 0..MAX_PROBES {
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
        None
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
        let table = FunctionTable::new(list.clone()).expect("table");
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
        let table = FunctionTable::new(list).expect("table");
        for (name, index) in [("a", 0), ("b", 1), ("c", 2)] {
            assert_eq!(table.find(42, name).map(|f| f.index), Some(index));
        }
        assert_eq!(table.find(7, "d").map(|f| f.index), Some(3));
        assert!(table.find(42, "d").is_none());
    }

    #[test]
    fn an_empty_library_finds_nothing() {
        let table = FunctionTable::new(Vec::new()).expect("table");
        assert!(table.list().is_empty());
        assert!(table.find(0, "").is_none());
        assert!(table.find(u64::MAX, "noop").is_none());
    }

    /// Fingerprints chosen to share a home cell (here: all equal) would make building the table
    /// quadratic and lookups long: past the probe bound the welcome is refused. So is a list
    /// longer than a library may be.
    #[test]
    fn colliding_or_too_many_functions_are_refused() {
        let colliding: Vec<_> = (0..=MAX_PROBES as u32)
            .map(|i| info(i, &format!("f{i}"), 42))
            .collect();
        let e = FunctionTable::new(colliding.clone()).expect_err("a long probe sequence");
        assert!(
            e.contains("collide") && e.contains(&format!("\"f{MAX_PROBES}\"")),
            "{e}"
        );
        // One fewer fits.
        FunctionTable::new(colliding[..MAX_PROBES].to_vec()).expect("at the bound");
        let many: Vec<_> = (0..=MAX_FUNCTIONS as u32)
            .map(|i| info(i, "f", u64::from(i).wrapping_mul(0xD6E8_FEB8_6659_FD93)))
            .collect();
        let e = FunctionTable::new(many).expect_err("too many functions");
        assert!(e.contains("65537 functions"), "{e}");
        // A library of the largest size with honest (well-spread) fingerprints is fine.
        let largest: Vec<_> = (0..MAX_FUNCTIONS as u32)
            .map(|i| {
                info(
                    i,
                    "f",
                    crate::fingerprint::Fingerprint::new()
                        .u64(u64::from(i))
                        .finish(),
                )
            })
            .collect();
        FunctionTable::new(largest).expect("the largest library");
    }

    #[test]
    fn the_table_stays_at_most_half_full() {
        for n in [0usize, 1, 3, 4, 5, 8, 9, 100, 1025] {
            let list = (0..n as u32).map(|i| info(i, "x", u64::from(i))).collect();
            let table = FunctionTable::new(list).expect("table");
            assert!(
                table.cells.len() >= 2 * n && table.cells.len() >= 8,
                "n = {n}"
            );
            assert!(table.cells.len().is_power_of_two());
        }
    }
}
