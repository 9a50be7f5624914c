//! Resynchronisation (RFC 4226 §7.4): find two consecutive codes in a wide window, computing each HMAC once.

use crate::{Code, Digits, Key, TotpMatch};

/// Finds `c` in `from_counter .. from_counter + search` (saturating) with
/// `hotp(c) == code1` and `hotp(c + 1) == code2`, trying counters in increasing order.
/// Returns `Some(c + 1)`, the counter of the second code (the server then stores
/// `c + 2` as its next counter). Codes of another length than `digits` never match.
///
/// Slides over the window so each counter's HMAC is computed once: `search + 1`
/// HMACs at most.
#[must_use]
pub fn resync_hotp(
    key: &Key,
    digits: Digits,
    code1: &Code,
    code2: &Code,
    from_counter: u64,
    search: u64,
) -> Option<u64> {
    if code1.digits() != digits || code2.digits() != digits || search == 0 {
        return None;
    }
    let end = from_counter.saturating_add(search);
    let mut previous = key.hotp(from_counter, digits);
    for counter in from_counter..end {
        let second = counter.checked_add(1)?;
        let current = key.hotp(second, digits);
        if previous.ct_eq(code1) & current.ct_eq(code2) {
            return Some(second);
        }
        previous = current;
    }
    None
}

/// Finds a step `s` in `current_step - search_steps ..= current_step + search_steps`
/// (clamped to the `u64` range) with `totp(s) == code1`, `totp(s + 1) == code2` and
/// `s + 1 > last_accepted_step` (if any). Returns the match of the SECOND code:
/// `TotpMatch { step: s + 1, offset: (s + 1) - current_step }`. If several pairs match,
/// the one whose second step is closest to `current_step` wins (the earlier on a tie).
///
/// Slides over the window so each step's HMAC is computed once.
#[must_use]
pub fn resync_totp(
    key: &Key,
    digits: Digits,
    code1: &Code,
    code2: &Code,
    current_step: u64,
    search_steps: u64,
    last_accepted_step: Option<u64>,
) -> Option<TotpMatch> {
    if code1.digits() != digits || code2.digits() != digits {
        return None;
    }
    closest_pair(
        |step| key.hotp(step, digits),
        code1,
        code2,
        current_step,
        search_steps,
        last_accepted_step,
    )
}

/// The scan of [`resync_totp`] over any code sequence `code_at(step)`.
fn closest_pair(
    mut code_at: impl FnMut(u64) -> Code,
    code1: &Code,
    code2: &Code,
    current_step: u64,
    search_steps: u64,
    last_accepted_step: Option<u64>,
) -> Option<TotpMatch> {
    let first = current_step.saturating_sub(search_steps);
    let last = current_step.saturating_add(search_steps);
    let mut best: Option<(u64, u64)> = None; // (distance, second step)
    let mut previous = code_at(first);
    for step in first..=last {
        let Some(second) = step.checked_add(1) else {
            break;
        };
        let distance = second.abs_diff(current_step);
        if second > current_step && best.is_some_and(|(d, _)| distance >= d) {
            break; // only farther candidates remain
        }
        let current = code_at(second);
        let fresh = last_accepted_step.is_none_or(|accepted| second > accepted);
        if fresh
            && (previous.ct_eq(code1) & current.ct_eq(code2))
            && best.is_none_or(|(d, _)| distance < d)
        {
            best = Some((distance, second));
        }
        previous = current;
    }
    best.map(|(_, second)| TotpMatch::new(second, current_step))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A code sequence with period 10: the pair (3, 4) occurs at steps 3, 13, 23, ...
    fn periodic(step: u64) -> Code {
        Code::from_truncated(u32::try_from(step % 10).unwrap(), Digits::SIX)
    }

    fn find(current: u64, search: u64, last: Option<u64>) -> Option<TotpMatch> {
        let (a, b) = (periodic(3), periodic(4));
        closest_pair(periodic, &a, &b, current, search, last)
    }

    #[test]
    fn closest_second_step_wins() {
        // Second steps 4, 14, 24, 34: closest to 15 is 14 (below), to 20 is 24 (above).
        assert_eq!(
            find(15, 20, None),
            Some(TotpMatch {
                step: 14,
                offset: -1
            })
        );
        assert_eq!(
            find(20, 20, None),
            Some(TotpMatch {
                step: 24,
                offset: 4
            })
        );
        assert_eq!(
            find(24, 20, None),
            Some(TotpMatch {
                step: 24,
                offset: 0
            })
        );
        // Ties (4 and 14 are both 5 away from 9): the earlier wins.
        assert_eq!(
            find(9, 20, None),
            Some(TotpMatch {
                step: 4,
                offset: -5
            })
        );
        assert_eq!(
            find(19, 20, None),
            Some(TotpMatch {
                step: 14,
                offset: -5
            })
        );
        // Spent second steps are skipped.
        assert_eq!(
            find(15, 20, Some(14)),
            Some(TotpMatch {
                step: 24,
                offset: 9
            })
        );
        assert_eq!(find(15, 5, Some(14)), None);
        // The first step of the pair may be just outside the window above.
        assert_eq!(find(2, 1, None), Some(TotpMatch { step: 4, offset: 2 }));
    }
}
