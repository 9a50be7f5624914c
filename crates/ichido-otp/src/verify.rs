//! Code verification over HOTP counter windows and TOTP step windows; reports what matched, never a bool.
//!
//! Every window edge uses checked/saturating arithmetic, so any `u64`/`i64` input is
//! safe. The cost is one HMAC per candidate (a clone of the precomputed key schedule),
//! with no allocation; callers bound `look_ahead`, `look_behind` and `window`.

use crate::{Code, Digits, Key};

/// Result of [`verify_hotp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HotpVerdict {
    /// The code matches `counter`, which is at or ahead of the expected counter;
    /// the server's next counter becomes `counter + 1`.
    Accepted {
        /// The counter whose code matched.
        counter: u64,
    },
    /// The code matches a counter below the expected one: it was already used or
    /// has been superseded (a replay).
    Spent {
        /// The counter whose code matched.
        counter: u64,
    },
    /// No counter in the windows matches (or the code has the wrong length).
    Rejected,
}

/// Where a TOTP code matched: `offset = step - current_step`, the clock drift (in
/// steps) the server learns from this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TotpMatch {
    /// The time step whose code matched.
    pub step: u64,
    /// `step - current_step`, saturated to the `i64` range.
    pub offset: i64,
}

impl TotpMatch {
    /// The match for `step` seen from `current_step`.
    #[must_use]
    pub fn new(step: u64, current_step: u64) -> TotpMatch {
        let diff = i128::from(step) - i128::from(current_step);
        let offset = i64::try_from(diff).unwrap_or(if diff < 0 { i64::MIN } else { i64::MAX });
        TotpMatch { step, offset }
    }
}

/// Result of [`verify_totp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TotpVerdict {
    /// The code matches a step after the last accepted one.
    Accepted(TotpMatch),
    /// The code matches only steps at or before the last accepted one (a replay).
    Spent(TotpMatch),
    /// No step in the window matches (or the code has the wrong length).
    Rejected,
}

/// Searches counters `next_counter ..= next_counter + look_ahead` (saturating at
/// `u64::MAX`) in order; the first match is `Accepted { counter }`. If none, searches
/// the `look_behind` counters just below `next_counter`, most recent first; a match
/// there is `Spent { counter }` (a code already used or superseded). A code whose
/// length differs from `digits` is `Rejected`.
#[must_use]
pub fn verify_hotp(
    key: &Key,
    digits: Digits,
    code: &Code,
    next_counter: u64,
    look_ahead: u64,
    look_behind: u64,
) -> HotpVerdict {
    if code.digits() != digits {
        return HotpVerdict::Rejected;
    }
    let last = next_counter.saturating_add(look_ahead);
    if let Some(counter) = key.find_counter(next_counter..=last, code) {
        return HotpVerdict::Accepted { counter };
    }
    let first_behind = next_counter.saturating_sub(look_behind);
    if let Some(counter) = key.find_counter((first_behind..next_counter).rev(), code) {
        return HotpVerdict::Spent { counter };
    }
    HotpVerdict::Rejected
}

/// Verifies a TOTP code around `centre = current_step + learned_offset` (saturated to
/// `0..=u64::MAX`). Candidate steps are `centre - window ..= centre + window` (clamped
/// to the `u64` range), tried centre first and then by increasing distance
/// (centre, -1, +1, -2, +2, ...).
///
/// A matching step `<= last_accepted_step` is `Spent`; the first matching step after
/// it is `Accepted` and wins over any `Spent` match. A code whose length differs from
/// `digits` is `Rejected`.
#[must_use]
pub fn verify_totp(
    key: &Key,
    digits: Digits,
    code: &Code,
    current_step: u64,
    learned_offset: i64,
    window: u64,
    last_accepted_step: Option<u64>,
) -> TotpVerdict {
    if code.digits() != digits {
        return TotpVerdict::Rejected;
    }
    let centre = current_step.saturating_add_signed(learned_offset);
    let mut spent: Option<TotpMatch> = None;
    let mut steps = CentreOut::new(centre, window);
    while let Some(step) = key.find_counter(&mut steps, code) {
        let found = TotpMatch::new(step, current_step);
        if last_accepted_step.is_some_and(|last| step <= last) {
            spent.get_or_insert(found);
        } else {
            return TotpVerdict::Accepted(found);
        }
    }
    spent.map_or(TotpVerdict::Rejected, TotpVerdict::Spent)
}

/// Steps `centre, centre-1, centre+1, centre-2, centre+2, ...` up to distance `window`,
/// skipping those outside `0..=u64::MAX`; ends once both sides are exhausted.
#[derive(Debug, Clone)]
pub(crate) struct CentreOut {
    centre: u64,
    window: u64,
    /// Distance of the next pair; `None` once past `window` or both edges.
    distance: Option<u64>,
    /// Whether the `+distance` side of the current pair is still due.
    plus_pending: bool,
}

impl CentreOut {
    pub(crate) fn new(centre: u64, window: u64) -> CentreOut {
        CentreOut {
            centre,
            window,
            distance: Some(0),
            plus_pending: false,
        }
    }
}

impl Iterator for CentreOut {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            let d = self.distance?;
            if d == 0 {
                self.distance = if self.window == 0 { None } else { Some(1) };
                return Some(self.centre);
            }
            if self.plus_pending {
                self.plus_pending = false;
                self.distance = d.checked_add(1).filter(|&n| n <= self.window);
                if let Some(step) = self.centre.checked_add(d) {
                    return Some(step);
                }
                continue;
            }
            let below = self.centre.checked_sub(d);
            let above = self.centre.checked_add(d);
            if below.is_none() && above.is_none() {
                self.distance = None;
                return None;
            }
            self.plus_pending = true;
            if below.is_some() {
                return below;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn centre_out_order_and_clamping() {
        let v: Vec<u64> = CentreOut::new(10, 2).collect();
        assert_eq!(v, [10, 9, 11, 8, 12]);
        let v: Vec<u64> = CentreOut::new(1, 3).collect();
        assert_eq!(v, [1, 0, 2, 3, 4]);
        let v: Vec<u64> = CentreOut::new(u64::MAX - 1, 2).collect();
        assert_eq!(v, [u64::MAX - 1, u64::MAX - 2, u64::MAX, u64::MAX - 3]);
        assert_eq!(CentreOut::new(5, 0).collect::<Vec<_>>(), [5]);
        // Huge window at both edges ends as soon as both sides are exhausted.
        assert_eq!(
            CentreOut::new(0, u64::MAX).take(5).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        let tiny_range: Vec<u64> = CentreOut::new(u64::MAX, u64::MAX).take(3).collect();
        assert_eq!(tiny_range, [u64::MAX, u64::MAX - 1, u64::MAX - 2]);
    }

    #[test]
    fn totp_match_offset_saturates() {
        assert_eq!(TotpMatch::new(5, 7).offset, -2);
        assert_eq!(TotpMatch::new(u64::MAX, 0).offset, i64::MAX);
        assert_eq!(TotpMatch::new(0, u64::MAX).offset, i64::MIN);
    }
}
