//! HLS master playlist and DASH MPD over the same CMAF (fMP4) segments. The muxer writes each
//! track's media playlist; these are written from what it wrote: segment durations from the
//! playlists, sizes from the files, so BANDWIDTH is the measured peak, not a guess.

use std::fmt::Write as _;

/// One segment of a track.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// File name, relative to the track's folder.
    pub uri: String,
    /// Seconds, as the media playlist states.
    pub duration: f64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// What a track is.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackKind {
    /// A rung of the video ladder.
    Video {
        /// Pixels.
        width: u32,
        /// Pixels.
        height: u32,
        /// Frame rate as (numerator, denominator).
        fps: (u32, u32),
    },
    /// The audio track.
    Audio {
        /// Channel count.
        channels: u32,
        /// Hz.
        sample_rate: u32,
    },
}

/// One packaged track: a folder with an init segment, media segments and a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Rendition name and folder, such as `720p` or `audio`.
    pub name: String,
    /// Video or audio, with its shape.
    pub kind: TrackKind,
    /// RFC 6381 codecs string of this track alone.
    pub codecs: String,
    /// Media timescale of the fMP4 track (ticks per second).
    pub timescale: u32,
    /// Init segment file name.
    pub init: String,
    /// Media playlist file name.
    pub playlist: String,
    /// The segments in order.
    pub segments: Vec<Segment>,
}

impl Track {
    /// Seconds of media.
    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// Bytes of media segments (init excluded).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Average bit/s over the whole track.
    pub fn average_bandwidth(&self) -> u64 {
        let duration = self.duration();
        if duration <= 0.0 {
            return 0;
        }
        (self.bytes() as f64 * 8.0 / duration).ceil() as u64
    }

    /// The highest bit/s of any segment (the HLS definition of BANDWIDTH). A final segment
    /// shorter than a second is averaged with the one before, so a few trailing frames do not
    /// set the peak.
    pub fn peak_bandwidth(&self) -> u64 {
        let mut peak = 0.0f64;
        let n = self.segments.len();
        for (i, segment) in self.segments.iter().enumerate() {
            let (bytes, duration) = if i + 1 == n && n > 1 && segment.duration < 1.0 {
                let before = &self.segments[i - 1];
                (segment.bytes + before.bytes, segment.duration + before.duration)
            } else {
                (segment.bytes, segment.duration)
            };
            if duration > 0.0 {
                peak = peak.max(bytes as f64 * 8.0 / duration);
            }
        }
        peak.ceil() as u64
    }

    fn path(&self, file: &str) -> String {
        format!("{}/{}", self.name, file)
    }
}

/// The media timescale an fMP4 init segment declares (its `mdhd` box), if it has one.
pub fn init_timescale(init: &[u8]) -> Option<u32> {
    let at = init.windows(4).position(|w| w == b"mdhd")?;
    // After the type: version (1 byte), flags (3), then creation and modification times
    // (4 bytes each in version 0, 8 in version 1), then the timescale.
    let version = *init.get(at + 4)?;
    let offset = at + 8 + if version == 1 { 16 } else { 8 };
    let bytes: [u8; 4] = init.get(offset..offset + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes)).filter(|t| *t > 0)
}

/// Why a media playlist could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("media playlist: {0}")]
pub struct PlaylistError(String);

/// The init segment and (duration, uri) of each segment of a VOD media playlist.
///
/// # Errors
/// A playlist without `#EXTM3U`, without `#EXT-X-MAP`, or with an unreadable duration.
pub fn parse_media_playlist(text: &str) -> Result<(String, Vec<(f64, String)>), PlaylistError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Err(PlaylistError("does not start with #EXTM3U".into()));
    }
    let mut init = None;
    let mut segments = Vec::new();
    let mut pending: Option<f64> = None;
    for line in lines {
        if let Some(map) = line.strip_prefix("#EXT-X-MAP:") {
            init = attribute(map, "URI");
        } else if let Some(inf) = line.strip_prefix("#EXTINF:") {
            let value = inf.split(',').next().unwrap_or_default();
            let duration: f64 = value
                .parse()
                .map_err(|_| PlaylistError(format!("bad EXTINF duration {value:?}")))?;
            pending = Some(duration);
        } else if !line.starts_with('#') {
            let duration = pending
                .take()
                .ok_or_else(|| PlaylistError(format!("segment {line} has no EXTINF")))?;
            segments.push((duration, line.to_owned()));
        }
    }
    let init = init.ok_or_else(|| PlaylistError("no EXT-X-MAP (not fMP4)".into()))?;
    Ok((init, segments))
}

fn attribute(list: &str, name: &str) -> Option<String> {
    let start = list.find(&format!("{name}="))? + name.len() + 1;
    let rest = &list[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next().map(str::to_owned)
    } else {
        rest.split(',').next().map(str::to_owned)
    }
}

/// A media playlist over `track`'s segments: `EVENT` while the encode goes on (players reload
/// it and it only grows), `VOD` with `#EXT-X-ENDLIST` once the track is complete. The target
/// duration is `target_seconds` (the configured segment length, which the keyframe grid keeps
/// every segment within) or the longest segment rounded, if one is longer: a growing playlist
/// must not change it.
pub fn media_playlist(track: &Track, target_seconds: u32, complete: bool) -> String {
    let longest = track.segments.iter().map(|s| s.duration).fold(0.0f64, f64::max);
    let target = u64::from(target_seconds).max(longest.round() as u64).max(1);
    let sequence = track.segments.first().and_then(|s| number_of(&s.uri)).unwrap_or(1);
    let kind = if complete { "VOD" } else { "EVENT" };
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n#EXT-X-PLAYLIST-TYPE:{kind}\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"{}\"\n",
        track.init
    );
    for segment in &track.segments {
        let _ = writeln!(out, "#EXTINF:{:.6},\n{}", segment.duration, segment.uri);
    }
    if complete {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// The HLS master playlist: one variant per rung (with the audio group when there is
/// audio), peak and average bandwidth measured over video plus audio.
pub fn hls_master(video: &[Track], audio: Option<&Track>) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    if let Some(audio) = audio {
        let channels = match audio.kind {
            TrackKind::Audio { channels, .. } => channels,
            TrackKind::Video { .. } => 2,
        };
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"Default\",LANGUAGE=\"und\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"{channels}\",URI=\"{}\"",
            audio.path(&audio.playlist)
        );
    }
    for track in video {
        let TrackKind::Video { width, height, fps } = track.kind else {
            continue;
        };
        let (audio_peak, audio_average, codecs, group) = match audio {
            Some(a) => (
                a.peak_bandwidth(),
                a.average_bandwidth(),
                format!("{},{}", track.codecs, a.codecs),
                ",AUDIO=\"audio\"",
            ),
            None => (0, 0, track.codecs.clone(), ""),
        };
        let _ = writeln!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={width}x{height},CODECS=\"{codecs}\",FRAME-RATE={:.3}{group}\n{}",
            track.peak_bandwidth() + audio_peak,
            track.average_bandwidth() + audio_average,
            f64::from(fps.0) / f64::from(fps.1.max(1)),
            track.path(&track.playlist),
        );
    }
    out
}

/// An ISO 8601 duration such as `PT20.021S`.
fn iso_duration(seconds: f64) -> String {
    format!("PT{:.3}S", seconds.max(0.0))
}

/// `<SegmentTemplate>` with an exact `<SegmentTimeline>`: durations in the track's timescale,
/// runs of equal durations folded into `r`.
fn segment_template(out: &mut String, track: &Track, indent: &str) {
    let timescale = f64::from(track.timescale.max(1));
    let media = track.segments.first().map(|s| numbered(&s.uri)).unwrap_or_default();
    let start = track.segments.first().and_then(|s| number_of(&s.uri)).unwrap_or(1);
    let _ = writeln!(
        out,
        "{indent}<SegmentTemplate timescale=\"{}\" initialization=\"{}\" media=\"{}\" startNumber=\"{start}\">",
        track.timescale,
        xml(&track.path(&track.init)),
        xml(&track.path(&media)),
    );
    let _ = writeln!(out, "{indent}  <SegmentTimeline>");
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for segment in &track.segments {
        let d = (segment.duration * timescale).round() as u64;
        match runs.last_mut() {
            Some((last, repeat)) if *last == d => *repeat += 1,
            _ => runs.push((d, 0)),
        }
    }
    for (i, (d, r)) in runs.iter().enumerate() {
        let t = if i == 0 { " t=\"0\"" } else { "" };
        let r = if *r > 0 { format!(" r=\"{r}\"") } else { String::new() };
        let _ = writeln!(out, "{indent}    <S{t} d=\"{d}\"{r}/>");
    }
    let _ = writeln!(out, "{indent}  </SegmentTimeline>\n{indent}</SegmentTemplate>");
}

/// `seg_00001.m4s` → `seg_$Number%05d$.m4s`: the digits that end the file's stem.
fn numbered(uri: &str) -> String {
    let (stem, extension) = uri.rsplit_once('.').map_or((uri, ""), |(s, e)| (s, e));
    let digits = stem.chars().rev().take_while(char::is_ascii_digit).count();
    let dot = if uri.contains('.') { "." } else { "" };
    format!("{}$Number%0{digits}d${dot}{extension}", &stem[..stem.len() - digits])
}

fn number_of(uri: &str) -> Option<u64> {
    let stem = uri.rsplit_once('.').map_or(uri, |(s, _)| s);
    let digits = stem.chars().rev().take_while(char::is_ascii_digit).count();
    stem[stem.len() - digits..].parse().ok()
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('"', "&quot;")
}

/// A static (VOD) MPD of the isoff-live profile: one video adaptation set over the rungs,
/// one audio adaptation set, segment timelines taken from the same segments HLS plays.
pub fn dash_mpd(video: &[Track], audio: Option<&Track>) -> String {
    mpd(video, audio, None)
}

/// A dynamic MPD over the segments stored so far of an encode that goes on: the same
/// adaptation sets and timelines as [`dash_mpd`], `availabilityStartTime` `available_from`
/// (RFC 3339: the wall time at which media time 0 counts as available, so that the clock's
/// "now" never runs past what is stored while the encode keeps ahead), refreshed every
/// 2 s, no time-shift limit (the whole presentation stays seekable from 0), published at
/// `published_at`. At completion the static MPD replaces it.
pub fn dash_mpd_dynamic(video: &[Track], audio: Option<&Track>, available_from: &str, published_at: &str) -> String {
    mpd(video, audio, Some((available_from, published_at)))
}

fn mpd(video: &[Track], audio: Option<&Track>, dynamic: Option<(&str, &str)>) -> String {
    let duration = video.iter().chain(audio).map(Track::duration).fold(0.0f64, f64::max);
    let max_segment = video
        .iter()
        .chain(audio)
        .flat_map(|t| t.segments.iter().map(|s| s.duration))
        .fold(0.0f64, f64::max);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let kind = match dynamic {
        None => format!(
            "type=\"static\" mediaPresentationDuration=\"{}\"",
            iso_duration(duration)
        ),
        Some((available_from, published_at)) => format!(
            "type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" minimumUpdatePeriod=\"PT2S\"",
            xml(available_from),
            xml(published_at)
        ),
    };
    let _ = writeln!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" {kind} minBufferTime=\"{}\" maxSegmentDuration=\"{}\">",
        iso_duration(max_segment.ceil()),
        iso_duration(max_segment),
    );
    let _ = writeln!(out, "  <Period id=\"0\" start=\"PT0S\">");
    if let Some(first) = video.first() {
        let (max_w, max_h, fps) = video.iter().fold((0, 0, (0, 1)), |acc, t| match t.kind {
            TrackKind::Video { width, height, fps } => (acc.0.max(width), acc.1.max(height), fps),
            TrackKind::Audio { .. } => acc,
        });
        let _ = writeln!(
            out,
            "    <AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\" maxWidth=\"{max_w}\" maxHeight=\"{max_h}\" frameRate=\"{}/{}\">",
            fps.0, fps.1
        );
        let _ = first;
        for track in video {
            let TrackKind::Video { width, height, .. } = track.kind else {
                continue;
            };
            let _ = writeln!(
                out,
                "      <Representation id=\"{}\" bandwidth=\"{}\" width=\"{width}\" height=\"{height}\" sar=\"1:1\" codecs=\"{}\">",
                xml(&track.name),
                track.peak_bandwidth(),
                xml(&track.codecs)
            );
            segment_template(&mut out, track, "        ");
            let _ = writeln!(out, "      </Representation>");
        }
        let _ = writeln!(out, "    </AdaptationSet>");
    }
    if let Some(audio) = audio {
        let (channels, rate) = match audio.kind {
            TrackKind::Audio { channels, sample_rate } => (channels, sample_rate),
            TrackKind::Video { .. } => (2, 48_000),
        };
        let _ = writeln!(
            out,
            "    <AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\" lang=\"und\" segmentAlignment=\"true\" startWithSAP=\"1\">\n      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{}\" audioSamplingRate=\"{rate}\">\n        <AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{channels}\"/>",
            xml(&audio.name),
            audio.peak_bandwidth(),
            xml(&audio.codecs),
        );
        segment_template(&mut out, audio, "        ");
        let _ = writeln!(out, "      </Representation>\n    </AdaptationSet>");
    }
    out.push_str("  </Period>\n");
    if let Some((_, published_at)) = dynamic {
        // The clock players measure availability by: the time of writing (a player would
        // otherwise ask a time server on the internet).
        let _ = writeln!(
            out,
            "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"{}\"/>",
            xml(published_at)
        );
    }
    out.push_str("</MPD>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(name: &str, kind: TrackKind, durations: &[(f64, u64)]) -> Track {
        Track {
            name: name.into(),
            kind,
            codecs: if name == "audio" { "mp4a.40.2" } else { "avc1.64001f" }.into(),
            timescale: if name == "audio" { 48_000 } else { 15_360 },
            init: "init.mp4".into(),
            playlist: "index.m3u8".into(),
            segments: durations
                .iter()
                .enumerate()
                .map(|(i, &(duration, bytes))| Segment {
                    uri: format!("seg_{:05}.m4s", i + 1),
                    duration,
                    bytes,
                })
                .collect(),
        }
    }

    fn video() -> Track {
        let kind = TrackKind::Video {
            width: 1280,
            height: 720,
            fps: (30, 1),
        };
        track("720p", kind, &[(4.0, 1_500_000), (4.0, 1_000_000), (2.0, 400_000)])
    }

    fn audio() -> Track {
        let kind = TrackKind::Audio {
            channels: 2,
            sample_rate: 48_000,
        };
        track("audio", kind, &[(4.010667, 64_000), (3.989333, 64_000), (2.0, 32_000)])
    }

    #[test]
    fn media_playlists_from_the_muxer_parse() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.000000,\nseg_00001.m4s\n#EXTINF:1.500000,\nseg_00002.m4s\n#EXT-X-ENDLIST\n";
        let (init, segments) = parse_media_playlist(text).expect("parses");
        assert_eq!(init, "init.mp4");
        assert_eq!(
            segments,
            vec![(4.0, "seg_00001.m4s".into()), (1.5, "seg_00002.m4s".into())]
        );
        assert!(parse_media_playlist("#EXTM3U\n#EXTINF:4,\na.ts\n").is_err());
        assert!(parse_media_playlist("#EXTM3U\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXTINF:x,\na.m4s\n").is_err());
    }

    #[test]
    fn a_growing_playlist_is_an_event_one_and_a_complete_one_vod_over_the_same_segments() {
        let growing = media_playlist(&video(), 4, false);
        assert!(growing.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"), "{growing}");
        assert!(!growing.contains("ENDLIST"), "{growing}");
        assert!(growing.contains("#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:1\n"));
        let complete = media_playlist(&video(), 4, true);
        assert!(complete.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{complete}");
        assert!(complete.ends_with("seg_00003.m4s\n#EXT-X-ENDLIST\n"), "{complete}");
        // Both parse to the same segments.
        let (init, a) = parse_media_playlist(&growing).expect("parses");
        let (_, b) = parse_media_playlist(&complete).expect("parses");
        assert_eq!(init, "init.mp4");
        assert_eq!(a, b);
        assert_eq!(a[2], (2.0, "seg_00003.m4s".into()));
        // A segment longer than the target raises it rather than break the rule.
        let long = track("x", video().kind, &[(6.4, 1)]);
        assert!(media_playlist(&long, 4, true).contains("#EXT-X-TARGETDURATION:6\n"));
    }

    #[test]
    fn bandwidth_is_the_measured_peak_and_average() {
        let v = video();
        assert_eq!(v.peak_bandwidth(), 3_000_000);
        assert_eq!(v.average_bandwidth(), 2_320_000);
    }

    #[test]
    fn the_master_lists_every_rung_with_its_attributes_and_the_audio_group() {
        let master = hls_master(&[video()], Some(&audio()));
        assert!(master.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n"));
        assert!(master.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\""));
        assert!(master.contains("URI=\"audio/index.m3u8\""));
        let a = audio();
        let expected = format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",FRAME-RATE=30.000,AUDIO=\"audio\"\n720p/index.m3u8\n",
            3_000_000 + a.peak_bandwidth(),
            2_320_000 + a.average_bandwidth()
        );
        assert!(master.ends_with(&expected), "{master}");
    }

    #[test]
    fn the_mpd_has_exact_timelines_over_the_same_segments() {
        let mpd = dash_mpd(&[video()], Some(&audio()));
        assert!(mpd.contains("mediaPresentationDuration=\"PT10.000S\""));
        assert!(mpd.contains(
            "<SegmentTemplate timescale=\"15360\" initialization=\"720p/init.mp4\" media=\"720p/seg_$Number%05d$.m4s\" startNumber=\"1\">"
        ));
        assert!(mpd.contains("<S t=\"0\" d=\"61440\" r=\"1\"/>\n"));
        assert!(mpd.contains("<S d=\"30720\"/>"));
        assert!(mpd.contains("<S t=\"0\" d=\"192512\"/>\n"));
        assert!(mpd.contains("<S d=\"191488\"/>"));
        assert!(mpd.contains("codecs=\"mp4a.40.2\" audioSamplingRate=\"48000\""));
    }

    #[test]
    fn a_dynamic_mpd_has_the_same_timelines_an_availability_start_and_no_duration() {
        let dynamic = dash_mpd_dynamic(
            &[video()],
            Some(&audio()),
            "2026-12-05T10:00:00Z",
            "2026-12-05T10:00:09Z",
        );
        assert!(dynamic.contains(
            "type=\"dynamic\" availabilityStartTime=\"2026-12-05T10:00:00Z\" publishTime=\"2026-12-05T10:00:09Z\" minimumUpdatePeriod=\"PT2S\""
        ), "{dynamic}");
        assert!(!dynamic.contains("mediaPresentationDuration"), "{dynamic}");
        assert!(!dynamic.contains("timeShiftBufferDepth"), "{dynamic}");
        assert!(dynamic
            .contains("<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"2026-12-05T10:00:09Z\"/>"));
        let body = |mpd: &str| {
            mpd.split_once("<Period")
                .and_then(|(_, rest)| rest.split_once("</Period>"))
                .map(|(period, _)| period.to_owned())
        };
        assert_eq!(body(&dynamic), body(&dash_mpd(&[video()], Some(&audio()))));
    }

    #[test]
    fn the_timescale_comes_from_the_init_segments_mdhd_in_either_version() {
        let mut v0 = b"\0\0\0\x20mdhd\0\0\0\0".to_vec();
        v0.extend([0u8; 8]);
        v0.extend(15_360u32.to_be_bytes());
        assert_eq!(init_timescale(&v0), Some(15_360));
        let mut v1 = b"xxxxmoov\0\0\0\x2cmdhd\x01\0\0\0".to_vec();
        v1.extend([0u8; 16]);
        v1.extend(48_000u32.to_be_bytes());
        assert_eq!(init_timescale(&v1), Some(48_000));
        assert_eq!(init_timescale(b"moov"), None);
        assert_eq!(init_timescale(b"mdhd\0\0\0\0\0\0"), None);
    }

    #[test]
    fn segment_names_become_number_templates() {
        assert_eq!(numbered("seg_00012.m4s"), "seg_$Number%05d$.m4s");
        assert_eq!(number_of("seg_00012.m4s"), Some(12));
        assert_eq!(numbered("part7.mp4"), "part$Number%01d$.mp4");
    }
}
