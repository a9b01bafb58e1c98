//! When a video that is still encoding can be played: the rule that decides it, apart from
//! any I/O so that it is tested on its own.
//!
//! A player that starts now at the beginning plays one second of media per second. The
//! encoder has `available` seconds stored and adds `rate` seconds per second, but only in whole
//! segments: at any moment the segment it is writing is not there yet. The player never
//! waits when, at every moment until the encode ends, what is stored is at least where the
//! player is plus a margin. With `rate ≥ 1` the first moment is the hardest; below, the
//! player gains `1 − rate` each second, and the moment the encode ends (or the player nears
//! the end) is.

/// Seconds of media a player must have ahead of its position at every moment.
pub const MARGIN_SECONDS: f64 = 1.0;

/// Whether a player starting now never catches up with the encoder.
///
/// `total`: seconds of media the encode will have; `available`: seconds stored now (whole
/// segments from the start); `rate`: seconds of media the encode adds per second of wall
/// time; `segment`: the length of the segment being written (not there until closed);
/// `margin`: what the player keeps ahead.
pub fn keeps_ahead(total: f64, available: f64, rate: f64, segment: f64, margin: f64) -> bool {
    if available >= total - 1e-6 {
        return available > 0.0;
    }
    // What the player may use without waiting for the segment in progress.
    let lead = available - segment - margin;
    if lead < 0.0 || !rate.is_finite() || rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    // The encode ends at `t_end`; until then the player gains `1 − rate` per second. It
    // only needs media up to the end, so the race is over at `total − margin` too.
    let t_end = (total - available) / rate;
    lead >= (1.0 - rate) * t_end.min(total - margin)
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
    fn an_encode_faster_than_playback_is_playable_once_a_segment_and_the_margin_are_stored() {
        // 4 s segments, 2× real time: the first segment alone is not enough (the player
        // would reach its end while the second is being written)…
        assert!(!keeps_ahead(90.0, 4.0, 2.0, 4.0, MARGIN_SECONDS));
        // …two are.
        assert!(keeps_ahead(90.0, 8.0, 2.0, 4.0, MARGIN_SECONDS));
        // Nothing stored: never.
        assert!(!keeps_ahead(90.0, 0.0, 10.0, 4.0, MARGIN_SECONDS));
    }

    #[test]
    fn an_encode_slower_than_playback_waits_until_the_rest_can_finish_ahead_of_the_player() {
        // 600 s at 0.9× real time: the player gains 0.1 s a second, ~60 s over the encode.
        assert!(!keeps_ahead(600.0, 8.0, 0.9, 4.0, MARGIN_SECONDS));
        assert!(!keeps_ahead(600.0, 60.0, 0.9, 4.0, MARGIN_SECONDS));
        assert!(keeps_ahead(600.0, 66.0, 0.9, 4.0, MARGIN_SECONDS));
        // The exact boundary: lead = (1 − rate) · (total − available) / rate.
        let (total, rate, segment) = (600.0, 0.9, 4.0);
        let available = f64::midpoint(60.0, 66.0);
        let lead = available - segment - MARGIN_SECONDS;
        let need = (1.0 - rate) * (total - available) / rate;
        assert_eq!(
            keeps_ahead(total, available, rate, segment, MARGIN_SECONDS),
            lead >= need
        );
        // A stalled encode is never playable before it ends.
        assert!(!keeps_ahead(600.0, 100.0, 0.0, 4.0, MARGIN_SECONDS));
    }

    #[test]
    fn of_an_unknown_length_only_an_encode_faster_than_playback_is_playable_early() {
        assert!(keeps_ahead(f64::INFINITY, 8.0, 1.5, 4.0, MARGIN_SECONDS));
        assert!(!keeps_ahead(f64::INFINITY, 300.0, 0.95, 4.0, MARGIN_SECONDS));
    }

    #[test]
    fn a_complete_track_is_playable_whatever_the_rate() {
        assert!(keeps_ahead(10.0, 10.0, 0.0, 4.0, MARGIN_SECONDS));
        assert!(!keeps_ahead(0.0, 0.0, 0.0, 4.0, MARGIN_SECONDS));
    }

    #[test]
    fn rate_counts_from_the_start() {
        assert!((rate(8.0, 4.0) - 2.0).abs() < 1e-9);
        assert!(rate(8.0, 0.0).abs() < 1e-9);
    }
}
