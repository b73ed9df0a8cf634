//! The bounds of the proxy's histograms (the GenAI conventions' where they name them); the
//! histograms themselves are [`sluice_shared::histogram`]'s.

pub use sluice_shared::histogram::{Bounds, Histogram, LocalHistogram};

/// `gen_ai.client.operation.duration`: the conventions' boundaries, 10 ms to 82 s.
pub static OPERATION_SECONDS: Bounds = Bounds {
    le: &[
        10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000, 1_280_000, 2_560_000, 5_120_000,
        10_240_000, 20_480_000, 40_960_000, 81_920_000,
    ],
    per_unit: 1e6,
};

/// Time to the first chunk of a stream: 1 ms to 10 s, finest where models answer.
pub static FIRST_CHUNK_SECONDS: Bounds = Bounds {
    le: &[
        1_000, 5_000, 10_000, 20_000, 40_000, 60_000, 80_000, 100_000, 250_000, 500_000, 750_000,
        1_000_000, 2_500_000, 5_000_000, 7_500_000, 10_000_000,
    ],
    per_unit: 1e6,
};

/// Time between a stream's chunks: a burst of events can come within a millisecond, a slow
/// model takes a second.
pub static CHUNK_GAP_SECONDS: Bounds = Bounds {
    le: &[
        1_000, 5_000, 10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000, 400_000,
        500_000, 750_000, 1_000_000, 2_500_000,
    ],
    per_unit: 1e6,
};

/// `gen_ai.client.token.usage`: the conventions' boundaries, powers of four.
pub static TOKENS: Bounds = Bounds {
    le: &[
        1, 4, 16, 64, 256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216,
        67_108_864,
    ],
    per_unit: 1.0,
};

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::histogram::MOST_BOUNDS;

    #[test]
    fn every_bound_list_fits_a_local_histogram_and_rises() {
        for bounds in [
            &OPERATION_SECONDS,
            &FIRST_CHUNK_SECONDS,
            &CHUNK_GAP_SECONDS,
            &TOKENS,
        ] {
            assert!(bounds.le.len() <= MOST_BOUNDS);
            assert!(bounds.le.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
