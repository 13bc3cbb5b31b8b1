//! Seeded mutation of byte strings, for the in-tree fuzz tests of the parsers (the ones
//! `cargo test` runs; cargo-fuzz does the long runs from `fuzz/`). Each test takes the seed from
//! `WATCHTOWER_FUZZ_SEED` (else the clock) and prints it, so a failure can be replayed, and the
//! number of rounds from `WATCHTOWER_FUZZ_ROUNDS` (default 2000).

/// A small seeded generator (xorshift64*).
pub(crate) struct Rng(u64);

impl Rng {
    /// The generator and round count for this run, from the environment.
    pub fn from_env() -> (Rng, usize) {
        let seed = std::env::var("WATCHTOWER_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        let rounds: usize = std::env::var("WATCHTOWER_FUZZ_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2000);
        eprintln!("fuzz seed {seed} (replay with WATCHTOWER_FUZZ_SEED={seed})");
        (Rng(seed), rounds)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One of `seeds`, changed one to four times: a byte overwritten, a piece inserted or written
/// over, a few bytes removed, the end cut off, or the tail of another seed appended.
pub(crate) fn mutate(rng: &mut Rng, seeds: &[&[u8]], pieces: &[&[u8]]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            1 => {
                let piece = pieces[rng.below(pieces.len())];
                data.splice(at..at, piece.iter().copied());
            }
            2 => {
                let piece = pieces[rng.below(pieces.len())];
                let end = (at + piece.len()).min(data.len());
                data.splice(at..end, piece.iter().copied());
            }
            3 => {
                let end = (at + rng.below(8)).min(data.len());
                data.drain(at..end);
            }
            4 => data.truncate(at),
            _ => {
                let other = seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                data.extend_from_slice(&other[from..]);
            }
        }
    }
    data
}
