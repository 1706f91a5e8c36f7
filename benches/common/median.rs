//! The middle of a bench's rounds: one slow spell of the shared machine moves it less than a mean.

/// The median of `values` (the upper of the two middle ones when there are an even number).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
