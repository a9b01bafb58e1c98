//! When a video that is still encoding can be played: the rule that decides it, apart from
//! any I/O so that it is tested on its own.
//!
//! A player that starts now at the beginning plays one second of media per second. The
//! encoder has `available` seconds stored, has produced `produced ≥ available` (the segment it
//! is writing is not there until it closes), and adds `rate` seconds per second. The player
//! never waits when every segment is stored before the player, a margin ahead of it, needs
//! it. Segment `k` after what is stored is written `(end of k − produced) / rate` from now and
//! needed at `available + k · segment − margin`: both grow linearly with `k`, so the first and
//! the last segment are the ones to check. Faster than real time, the first is the hardest
//! (and the faster, the sooner it is met: a quick encode is playable once its first segment
//! is stored); slower, the last.
//!
//! The rate is the encoder's throughput: what it has given out since its first frame, over
//! the time since. The pictures an encoder holds back to look ahead before it gives out its
//! first frame delay every segment alike; they are behind the encode once it has begun to
//! give out, and counting them as time spent would take a quick encode for a slow one.
use std::collections::BTreeSet;

/// Seconds of media a player must have ahead of its position at every moment.
pub const MARGIN_SECONDS: f64 = 1.0;

/// Whether a player starting now never catches up with the encoder.
///
/// `total`: seconds of media the encode will have; `available`: seconds stored now (whole
/// segments from the start); `produced`: seconds the encoder has given out (at least
/// `available`: the segment being written is partly there); `rate`: seconds of media the
/// encode adds per second of wall time; `next`: the length of the segment being written (not
/// there until closed); `segment`: the length of those after it; `margin`: what the player
/// keeps ahead.
pub fn keeps_ahead(
    total: f64,
    (available, produced): (f64, f64),
    rate: f64,
    (next, segment): (f64, f64),
    margin: f64,
) -> bool {
    if available >= total - 1e-6 {
        return available > 0.0;
    }
    // (`max` takes `available` when `produced` is NaN.)
    let produced = produced.max(available);
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
    let ready = |k: f64| ((start(k + 1.0)).min(total) - produced).max(0.0) / rate;
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

/// The rungs the master lists next, or `None` to leave it as it is: those `ahead` (rungs that
/// keep ahead now) with those `listed` already (a rung, once listed, stays); the first master
/// only once every rung of `first` is among them — a player that loads a master with fewer
/// rungs stays on those (hls.js does not load it again), so the lead's rungs, which advance
/// together, start together.
pub fn next_master(
    listed: &BTreeSet<String>,
    ahead: BTreeSet<String>,
    first: &BTreeSet<String>,
) -> Option<BTreeSet<String>> {
    let mut names = ahead;
    names.extend(listed.iter().cloned());
    if names.is_empty() || &names == listed || (listed.is_empty() && !first.is_subset(&names)) {
        return None;
    }
    Some(names)
}

/// Media seconds encoded per second of wall time: `seconds` given out over `elapsed` seconds
/// (0 when no time has passed).
pub fn rate(seconds: f64, elapsed: f64) -> f64 {
    if elapsed <= 0.0 {
        return 0.0;
    }
    seconds / elapsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encode_faster_than_playback_is_playable_once_its_next_segment_comes_before_the_player_needs_it() {
        // 4 s segments at real time: the first alone is not enough (the player would reach
        // its end, less the margin, while the second is being written)…
        assert!(!keeps_ahead(90.0, (4.0, 4.0), 1.0, (4.0, 4.0), MARGIN_SECONDS));
        // …two are.
        assert!(keeps_ahead(90.0, (8.0, 8.0), 1.0, (4.0, 4.0), MARGIN_SECONDS));
        // At 2× the second is written in 2 s, before the player is 1 s from the first's end.
        assert!(keeps_ahead(90.0, (4.0, 4.0), 2.0, (4.0, 4.0), MARGIN_SECONDS));
        // The boundary: the second segment comes at 4 / rate, needed at 4 − margin.
        assert!(keeps_ahead(90.0, (4.0, 4.0), 4.0 / 3.0, (4.0, 4.0), MARGIN_SECONDS));
        assert!(!keeps_ahead(
            90.0,
            (4.0, 4.0),
            4.0 / 3.0 - 0.01,
            (4.0, 4.0),
            MARGIN_SECONDS
        ));
        // Nothing stored: never.
        assert!(!keeps_ahead(90.0, (0.0, 0.0), 10.0, (4.0, 4.0), MARGIN_SECONDS));
    }

    #[test]
    fn an_encode_slower_than_playback_waits_until_the_rest_can_finish_ahead_of_the_player() {
        // 600 s at 0.9× real time: the player gains 0.1 s a second, ~60 s over the encode.
        assert!(!keeps_ahead(600.0, (8.0, 8.0), 0.9, (4.0, 4.0), MARGIN_SECONDS));
        assert!(!keeps_ahead(600.0, (60.0, 60.0), 0.9, (4.0, 4.0), MARGIN_SECONDS));
        assert!(!keeps_ahead(600.0, (64.0, 64.0), 0.9, (4.0, 4.0), MARGIN_SECONDS));
        assert!(keeps_ahead(600.0, (68.0, 68.0), 0.9, (4.0, 4.0), MARGIN_SECONDS));
        // The exact boundary: the last segment, [596, 600), is stored (600 − available) / rate
        // from now and needed at 596 − margin.
        let (total, rate, segment) = (600.0, 0.9, 4.0);
        for available in [56.0, 60.0, 64.0, 68.0, 72.0] {
            let need = (total - available) / rate <= total - segment - MARGIN_SECONDS;
            assert_eq!(
                keeps_ahead(total, (available, available), rate, (segment, segment), MARGIN_SECONDS),
                need,
                "{available}"
            );
        }
        // A stalled encode is never playable before it ends.
        assert!(!keeps_ahead(600.0, (100.0, 100.0), 0.0, (4.0, 4.0), MARGIN_SECONDS));
    }

    #[test]
    fn a_short_first_segment_makes_a_quick_encode_playable_sooner() {
        // 2 s, 2 s, then 4 s segments at 2.5× real time: the first 2 s are enough (the next
        // 2 s come in 0.8 s, before the player is within a second of them; the 4 s after in
        // 2.4 s, before it reaches them, less the margin, at 3 s)…
        assert!(keeps_ahead(90.0, (2.0, 2.0), 2.5, (2.0, 4.0), MARGIN_SECONDS));
        // …which 4 s segments would not be (the next one's 4 s come at 1.6 s).
        assert!(!keeps_ahead(90.0, (2.0, 2.0), 2.5, (4.0, 4.0), MARGIN_SECONDS));
        // At 2× the next 2 s, and the 4 s after them, come just in time; slower, not.
        assert!(!keeps_ahead(90.0, (2.0, 2.0), 1.9, (2.0, 4.0), MARGIN_SECONDS));
        assert!(keeps_ahead(90.0, (2.0, 2.0), 2.0, (2.0, 4.0), MARGIN_SECONDS));
    }

    #[test]
    fn what_the_encoder_has_given_out_past_the_stored_segments_is_ahead_but_only_stored_media_plays() {
        // 4 s stored, the encoder 3 s into the next 4 s at 1.2×: that segment closes in 0.83 s,
        // before the player is within a second of it (at 3 s)…
        assert!(keeps_ahead(90.0, (4.0, 7.0), 1.2, (4.0, 4.0), MARGIN_SECONDS));
        // …which, counted from what is stored, it would not (4 s / 1.2 = 3.3 s).
        assert!(!keeps_ahead(90.0, (4.0, 4.0), 1.2, (4.0, 4.0), MARGIN_SECONDS));
        // Nothing stored: what is being written does not play, however far it is.
        assert!(!keeps_ahead(90.0, (0.0, 3.9), 10.0, (4.0, 4.0), MARGIN_SECONDS));
        // A reading behind what is stored counts as what is stored.
        for rate in [1.0, 1.5, 2.0, 3.0] {
            assert_eq!(
                keeps_ahead(90.0, (4.0, 1.0), rate, (4.0, 4.0), MARGIN_SECONDS),
                keeps_ahead(90.0, (4.0, 4.0), rate, (4.0, 4.0), MARGIN_SECONDS),
            );
        }
    }

    #[test]
    fn of_an_unknown_length_only_an_encode_faster_than_playback_is_playable_early() {
        assert!(keeps_ahead(f64::INFINITY, (8.0, 8.0), 1.5, (4.0, 4.0), MARGIN_SECONDS));
        assert!(!keeps_ahead(
            f64::INFINITY,
            (300.0, 300.0),
            0.95,
            (4.0, 4.0),
            MARGIN_SECONDS
        ));
    }

    #[test]
    fn a_complete_track_is_playable_whatever_the_rate() {
        assert!(keeps_ahead(10.0, (10.0, 10.0), 0.0, (4.0, 4.0), MARGIN_SECONDS));
        assert!(!keeps_ahead(0.0, (0.0, 0.0), 0.0, (4.0, 4.0), MARGIN_SECONDS));
    }

    #[test]
    fn the_first_master_waits_for_every_lead_rung_and_later_ones_add_what_keeps_ahead() {
        let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<BTreeSet<String>>();
        let lead = set(&["480p", "360p"]);
        // 360p closed its first segment a moment before 480p: no master yet.
        assert_eq!(next_master(&set(&[]), set(&["360p"]), &lead), None);
        assert_eq!(
            next_master(&set(&[]), set(&["480p", "360p"]), &lead),
            Some(lead.clone())
        );
        // Then the larger rungs join as they keep ahead; none leaves.
        assert_eq!(next_master(&lead, set(&["480p"]), &lead), None);
        assert_eq!(
            next_master(&lead, set(&["720p"]), &lead),
            Some(set(&["720p", "480p", "360p"]))
        );
        // Without a lead, the first rung that keeps ahead makes the first master.
        assert_eq!(next_master(&set(&[]), set(&["360p"]), &set(&[])), Some(set(&["360p"])));
        assert_eq!(next_master(&set(&[]), set(&[]), &set(&[])), None);
    }

    #[test]
    fn rate_counts_from_the_start() {
        assert!((rate(8.0, 4.0) - 2.0).abs() < 1e-9);
        assert!(rate(8.0, 0.0).abs() < 1e-9);
    }
}
