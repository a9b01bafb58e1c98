// The player (hls.js, or dash.js when asked) and its QoE beacons: one session per play, events
// batched to POST /v1/playback/beacons. What was sent is counted on window.vodsourceQoe, for
// people in the console and for the browser test.

const HEARTBEAT_MS = 10_000;
const FLUSH_MS = 1_000;

/** A random UUID (v4); crypto.randomUUID needs a secure context, this does not. */
export function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** What the beacons say of this device: read from the user agent once. */
const DEVICE = (() => {
  const ua = navigator.userAgent;
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Windows/.test(ua) ? 'Windows'
    : /Mac OS X/.test(ua) ? 'macOS' : /Linux/.test(ua) ? 'Linux' : 'other';
  const browser = /Edg\//.test(ua) ? 'Edge' : /Firefox\//.test(ua) ? 'Firefox' : /Chrom(e|ium)\//.test(ua) ? 'Chrome'
    : /Safari\//.test(ua) ? 'Safari' : 'other';
  const type = /Mobi|Android|iPhone/.test(ua) ? 'mobile' : /iPad|Tablet/.test(ua) ? 'tablet' : 'desktop';
  return { os, browser, device_type: type };
})();

/** Counters of what every session of this page sent and the server accepted. */
const stats = (window.vodsourceQoe = window.vodsourceQoe || { sid: null, sent: {}, accepted: 0, rejected: 0, errors: [] });

export class Session {
  /**
   * @param {object} o
   * @param {HTMLVideoElement} o.video
   * @param {string} o.videoId
   * @param {string|null} o.viewerId
   * @param {(path: string, body: object, keepalive?: boolean) => Promise<any>} o.post
   * @param {boolean} o.dash play the DASH manifest with dash.js
   * @param {number} o.resumeMs where to start
   * @param {(text: string) => void} o.onStats
   * @param {(text: string) => void} o.onError
   */
  constructor(o) {
    Object.assign(this, o);
    this.sid = uuid4();
    this.queue = [];
    this.timers = [];
    this.listeners = [];
    this.started = performance.now();
    this.firstFrame = false;
    this.stallAt = null;
    this.seeking = false;
    this.ended = false;
    this.kbps = undefined;
    this.closed = false;
    stats.sid = this.sid;
  }

  /** Starts playback of `playback` (the API's signed URLs). */
  start(playback) {
    this.emit('session_start', {});
    const v = this.video;
    const on = (name, fn) => {
      v.addEventListener(name, fn);
      this.listeners.push([name, fn]);
    };
    on('playing', () => {
      if (!this.firstFrame) {
        this.firstFrame = true;
        this.emit('playing', { startup_ms: Math.round(performance.now() - this.started) });
      } else if (this.stallAt !== null) {
        this.emit('rebuffer_end', { rebuffer_ms: Math.round(performance.now() - this.stallAt) });
        this.stallAt = null;
      } else {
        this.emit('playing', {});
      }
    });
    on('waiting', () => {
      if (this.firstFrame && !this.seeking && this.stallAt === null && !v.ended) {
        this.stallAt = performance.now();
        this.emit('rebuffer_start', { bs: true });
      }
    });
    on('pause', () => {
      if (!v.ended && this.firstFrame) this.emit('pause', {});
    });
    on('seeking', () => {
      this.seeking = true;
    });
    on('seeked', () => {
      this.seeking = false;
      if (this.firstFrame) this.emit('seek', {});
    });
    on('ended', () => {
      this.ended = true;
      this.emit('ended', {});
    });
    on('error', () => {
      const e = v.error;
      this.fail(`MEDIA_ERR_${e ? e.code : 0}`, e && e.message ? e.message : 'the video element failed');
    });
    this.timers.push(setInterval(() => {
      if (!v.paused && !v.ended && this.firstFrame) this.emit('heartbeat', {});
    }, HEARTBEAT_MS));
    this.timers.push(setInterval(() => this.flush(false), FLUSH_MS));

    const start = this.resumeMs > 0 ? this.resumeMs / 1000 : -1;
    if (this.dash) {
      // dash.js starts playback itself (autoplay): it must see the element's `play` event,
      // or it never refreshes a dynamic MPD.
      this.startDash(playback.dash_url, start);
      return;
    }
    // From the start unless resuming: a video still encoding has a growing (EVENT) playlist,
    // which hls.js would otherwise join at its live edge.
    this.startHls(playback.hls_url, Math.max(start, 0));
    const played = v.play();
    if (played && played.catch) played.catch((e) => this.onError(`press play to start (${e.message})`));
  }

  startHls(url, start) {
    const v = this.video;
    if (window.Hls && window.Hls.isSupported()) {
      const hls = new window.Hls({ startPosition: start });
      this.player = { name: 'hls.js', version: window.Hls.version, destroy: () => hls.destroy() };
      hls.on(window.Hls.Events.LEVEL_SWITCHED, (_, data) => {
        const level = hls.levels[data.level];
        if (!level) return;
        const kbps = Math.round(level.bitrate / 1000);
        if (kbps !== this.kbps) {
          const first = this.kbps === undefined;
          this.kbps = kbps;
          this.rendition = level.height ? `${level.height}p` : `${kbps} kbit/s`;
          if (!first) this.emit('bitrate_change', {});
          this.showStats();
        }
      });
      hls.on(window.Hls.Events.ERROR, (_, data) => {
        if (data.fatal) this.fail(`HLS_${String(data.type).toUpperCase()}`, data.details || 'fatal hls.js error');
      });
      hls.loadSource(url);
      hls.attachMedia(v);
    } else if (v.canPlayType('application/vnd.apple.mpegurl')) {
      this.player = { name: 'native-hls', version: undefined, destroy: () => v.removeAttribute('src') };
      v.src = url;
      if (start > 0) v.addEventListener('loadedmetadata', () => { v.currentTime = start; }, { once: true });
    } else {
      this.fail('UNSUPPORTED', 'this browser plays neither HLS nor Media Source Extensions');
    }
  }

  startDash(url, start) {
    if (!window.dashjs) {
      this.fail('UNSUPPORTED', 'dash.js is not loaded');
      return;
    }
    const player = window.dashjs.MediaPlayer().create();
    this.player = { name: 'dash.js', version: player.getVersion(), destroy: () => player.reset() };
    const events = window.dashjs.MediaPlayer.events;
    player.on(events.QUALITY_CHANGE_RENDERED, (e) => {
      if (e.mediaType !== 'video') return;
      // dash.js 5: the new Representation (bandwidth in bit/s, height).
      const info = e.newRepresentation || player.getCurrentRepresentationForType('video');
      const kbps = info && info.bandwidth ? Math.round(info.bandwidth / 1000) : undefined;
      if (kbps !== undefined && kbps !== this.kbps) {
        const first = this.kbps === undefined;
        this.kbps = kbps;
        this.rendition = info.height ? `${info.height}p` : `${kbps} kbit/s`;
        if (!first) this.emit('bitrate_change', {});
        this.showStats();
      }
    });
    player.on(events.ERROR, (e) => {
      const err = e.error || {};
      this.fail(`DASH_${err.code || 'ERROR'}`, err.message || 'dash.js error');
    });
    // From 0 unless resuming: a video still encoding has a dynamic MPD, which dash.js would
    // otherwise join at its live edge.
    player.initialize(this.video, `${url}#t=${Math.max(start, 0)}`, true);
  }

  fail(code, message) {
    this.emit('error', { error_code: String(code).slice(0, 64), error_message: String(message).slice(0, 256) });
    stats.errors.push(`${code}: ${message}`);
    this.onError(`${code}: ${message}`);
  }

  showStats() {
    this.onStats(`${this.player ? this.player.name : ''} · ${this.rendition || ''} · ${this.kbps || '?'} kbit/s`);
  }

  emit(type, extra) {
    if (this.closed) return;
    const v = this.video;
    const event = {
      event_id: uuid4(),
      event_type: type,
      sid: this.sid,
      cid: this.videoId,
      ts: Date.now(),
      position_ms: Math.max(0, Math.round((v.currentTime || 0) * 1000)),
      ...DEVICE,
      player_name: this.player ? this.player.name : (this.dash ? 'dash.js' : 'hls.js'),
      ...extra,
    };
    if (this.viewerId) event.viewer_id = this.viewerId;
    if (Number.isFinite(v.duration) && v.duration > 0) event.duration_ms = Math.round(v.duration * 1000);
    if (this.kbps !== undefined) event.br = this.kbps;
    if (this.player && this.player.version) event.player_version = String(this.player.version).slice(0, 32);
    this.queue.push(event);
    if (type !== 'heartbeat' && type !== 'session_start') this.flush(false);
  }

  async flush(keepalive) {
    if (this.queue.length === 0) return;
    const events = this.queue.splice(0, 500);
    try {
      const answer = await this.post('/v1/playback/beacons', { events }, keepalive);
      for (const e of events) stats.sent[e.event_type] = (stats.sent[e.event_type] || 0) + 1;
      stats.accepted += answer.accepted || 0;
      stats.rejected += answer.rejected || 0;
    } catch (e) {
      // A lost answer or a server that could not store the batch: kept for the next flush
      // (the lake keeps one row per event_id). A batch the server refused as malformed (4xx)
      // would be refused again: dropped.
      const refused = e.status >= 400 && e.status < 500 && e.status !== 429 && e.status !== 408;
      if (!refused) this.queue.unshift(...events);
      stats.errors.push(`beacons: ${e.message}`);
    }
  }

  /** Ends the session: the last events go out even if the page is going away. */
  stop() {
    if (this.closed) return;
    if (!this.ended) this.emit('heartbeat', {});
    this.emit('session_end', {});
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    for (const [name, fn] of this.listeners) this.video.removeEventListener(name, fn);
    this.flush(true);
    if (this.player) this.player.destroy();
    this.video.removeAttribute('src');
    this.video.load();
  }
}
