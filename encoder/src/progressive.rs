//! When a video that is still encoding can be played: the rule that decides it, apart from
//! any I/O so that it is tested on its own.
//!
//! A player that starts now at the beginning plays one second of media per second. The
//! encoder has `available` seconds stored and adds `rate` seconds per second, but only in whole
//! segments: at any moment the segment it is writing is not there yet. The player never
//! waits when every segment is stored before the player, a margin ahead of it, needs it.
//! Segment `k` after what is stored is written at most `(k + 1) · segment / rate` from now
//! (the one in progress is partly written already) and needed at `available + k · segment −
//! margin`: both grow linearly with `k`, so the first and the last segment are the ones to
//! check. Faster than real time, the first is the hardest (and the faster, the sooner it is
//! met: a quick encode is playable once its first segment is stored); slower, the last.
/// Seconds of media a player must have ahead of its position at every moment.
pub const MARGIN_SECONDS: f64 = 1.0;

/// Whether a player starting now never catches up with the encoder.
///
/// `total`: seconds of media the encode will have; `available`: seconds stored now (whole
/// segments from the start); `rate`: seconds of media the encode adds per second of wall
/// time; `next`: the length of the segment being written (not there until closed);
/// `segment`: the length of those after it; `margin`: what the player keeps ahead.
pub fn keeps_ahead(total: f64, available: f64, rate: f64, (next, segment): (f64, f64), margin: f64) -> bool {
    if available >= total - 1e-6 {
        return available > 0.0;
    }
    if available <= 0.0
        || !rate.is_finite()
        || rate <= 0.0
        || next.is_nan()
        || next <= 0.0
        || segment.is_nan()
        || segment <= 0.0
    {
        return false;
    }
    // Segment k after what is stored (0: the one being written): when it is there, and when
    // the player reaches it.
    let start = |k: f64| {
        if k < 1.0 {
            available
        } else {
            available + next + (k - 1.0) * segment
        }
    };
    let ready = |k: f64| ((start(k + 1.0)).min(total) - available) / rate;
    let needed = |k: f64| start(k) - margin;
    let meets = |k: f64| ready(k) <= needed(k);
    if !meets(0.0) || (start(1.0) < total && !meets(1.0)) {
        return false;
    }
    if !total.is_finite() {
        // Of an unknown length, only an encode at least as fast as playback.
        return rate >= 1.0;
    }
    // From segment 1 on both grow linearly: the last is the other one to check.
    let last = ((total - available - next) / segment).ceil();
    last < 1.0 || meets(last)
}

/// Media seconds encoded per second of wall time, from `available` stored after `elapsed`
/// seconds (the encode's start-up included: it errs on the slow side).
pub fn rate(available: f64, elapsed: f64) -> f64 {
    if elapsed <= 0.0 {
        return 0.0;
    }
    available / elapsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encode_faster_than_playback_is_playable_once_its_next_segment_comes_before_the_player_needs_it() {
        // 4 s segments at real time: the first alone is not enough (the player would reach
        // its end, less the margin, while the second is being written)…
        assert!(!keeps_ahead(90.0, 4.0, 1.0, (4.0, 4.0), MARGIN_SECONDS));
        // …two are.
        assert!(keeps_ahead(90.0, 8.0, 1.0, (4.0, 4.0), MARGIN_SECONDS));
        // At 2× the second is written in 2 s, before the player is 1 s from the first's end.
        assert!(keeps_ahead(90.0, 4.0, 2.0, (4.0, 4.0), MARGIN_SECONDS));
        // The boundary: the second segment comes at 4 / rate, needed at 4 − margin.
        assert!(keeps_ahead(90.0, 4.0, 4.0 / 3.0, (4.0, 4.0), MARGIN_SECONDS));
        assert!(!keeps_ahead(90.0, 4.0, 4.0 / 3.0 - 0.01, (4.0, 4.0), MARGIN_SECONDS));
        // Nothing stored: never.
        assert!(!keeps_ahead(90.0, 0.0, 10.0, (4.0, 4.0), MARGIN_SECONDS));
    }

    #[test]
    fn an_encode_slower_than_playback_waits_until_the_rest_can_finish_ahead_of_the_player() {
        // 600 s at 0.9× real time: the player gains 0.1 s a second, ~60 s over the encode.
        assert!(!keeps_ahead(600.0, 8.0, 0.9, (4.0, 4.0), MARGIN_SECONDS));
        assert!(!keeps_ahead(600.0, 60.0, 0.9, (4.0, 4.0), MARGIN_SECONDS));
        assert!(!keeps_ahead(600.0, 64.0, 0.9, (4.0, 4.0), MARGIN_SECONDS));
        assert!(keeps_ahead(600.0, 68.0, 0.9, (4.0, 4.0), MARGIN_SECONDS));
        // The exact boundary: the last segment, [596, 600), is stored (600 − available) / rate
        // from now and needed at 596 − margin.
        let (total, rate, segment) = (600.0, 0.9, 4.0);
        for available in [56.0, 60.0, 64.0, 68.0, 72.0] {
            let need = (total - available) / rate <= total - segment - MARGIN_SECONDS;
            assert_eq!(
                keeps_ahead(total, available, rate, (segment, segment), MARGIN_SECONDS),
                need,
                "{available}"
            );
        }
        // A stalled encode is never playable before it ends.
        assert!(!keeps_ahead(600.0, 100.0, 0.0, (4.0, 4.0), MARGIN_SECONDS));
    }

    #[test]
    fn a_short_first_segment_makes_a_quick_encode_playable_sooner() {
        // 2 s, 2 s, then 4 s segments at 2.5× real time: the first 2 s are enough (the next
        // 2 s come in 0.8 s, before the player is within a second of them; the 4 s after in
        // 2.4 s, before it reaches them, less the margin, at 3 s)…
        assert!(keeps_ahead(90.0, 2.0, 2.5, (2.0, 4.0), MARGIN_SECONDS));
        // …which 4 s segments would not be (the next one's 4 s come at 1.6 s).
        assert!(!keeps_ahead(90.0, 2.0, 2.5, (4.0, 4.0), MARGIN_SECONDS));
        // At 2× the next 2 s, and the 4 s after them, come just in time; slower, not.
        assert!(!keeps_ahead(90.0, 2.0, 1.9, (2.0, 4.0), MARGIN_SECONDS));
        assert!(keeps_ahead(90.0, 2.0, 2.0, (2.0, 4.0), MARGIN_SECONDS));
    }

    #[test]
    fn of_an_unknown_length_only_an_encode_faster_than_playback_is_playable_early() {
        assert!(keeps_ahead(f64::INFINITY, 8.0, 1.5, (4.0, 4.0), MARGIN_SECONDS));
        assert!(!keeps_ahead(f64::INFINITY, 300.0, 0.95, (4.0, 4.0), MARGIN_SECONDS));
    }

    #[test]
    fn a_complete_track_is_playable_whatever_the_rate() {
        assert!(keeps_ahead(10.0, 10.0, 0.0, (4.0, 4.0), MARGIN_SECONDS));
        assert!(!keeps_ahead(0.0, 0.0, 0.0, (4.0, 4.0), MARGIN_SECONDS));
    }

    #[test]
    fn rate_counts_from_the_start() {
        assert!((rate(8.0, 4.0) - 2.0).abs() < 1e-9);
        assert!(rate(8.0, 0.0).abs() < 1e-9);
    }
}
