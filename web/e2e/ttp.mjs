// Time to playable, as a viewer sees it (the benchmark of scripts/bench-playable.sh): with
// Chromium already open on the server's page, registers SOURCE asking for publication once
// playable, uploads it, and at upload-complete starts the clock. The page then follows the
// video's live events (SSE); at VideoPublished (once playable, or at completion on the path
// without progressive publication) it fetches the playback URLs and starts hls.js at 0; the
// first frame shown (requestVideoFrameCallback) stops the clock. Then it waits on the events
// for the encode to end and reads the recorded times from the history. Prints one JSON line: ttp_ms
// (upload-complete → first frame), playable_ms (upload-complete → VideoPlayable or
// EncodingCompleted recorded), ttc_ms (→ EncodingCompleted).
//
// Environment: BASE (the server, authentication off), SOURCE (a video file), CHROMIUM.

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { need, open } from './browser.mjs';

const { BASE, SOURCE } = need('BASE', 'SOURCE');
const { browser, page } = await open('ttp');
const result = {};
const api = async (method, path, body) => {
  const r = await fetch(`${BASE}${path}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.json();
};
try {
  await page.goto(`${BASE}/`);
  await page.waitForFunction(() => window.Hls !== undefined);
  // Streamed from the file, not held: at 600 s the source is ~0.9 GB, which the server's
  // held pictures and spill need more than this uploader does.
  const { size } = await stat(SOURCE);
  const registered = await api('POST', '/v1/videos', {
    title: 'time to playable', filename: 'source.mp4', content_type: 'video/mp4',
    size_bytes: size, publish_when_playable: true,
  });
  const id = registered.video_id;
  const put = await fetch(registered.upload.url, {
    method: 'PUT',
    headers: { 'content-length': String(size) },
    body: Readable.toWeb(createReadStream(SOURCE)),
    duplex: 'half',
  });
  if (!put.ok) throw new Error(`PUT: ${put.status}`);
  await api('POST', `/v1/videos/${id}/upload-complete`);
  const t0 = Date.now();
  result.video_id = id;
  // In the page: wait until it plays, start hls.js, and report the first frame's time.
  const seen = await page.evaluate(async (id) => {
    const wait = (ms) => new Promise((r) => setTimeout(r, ms));
    // The video's live events (as an app would follow them): it plays from VideoPublished
    // (registered to publish once playable: at VideoPlayable, or at completion).
    const statusAtPlay = await new Promise((resolve, reject) => {
      const events = new EventSource(`/v1/videos/${id}/events`);
      const end = (settle) => (e) => { events.close(); settle(e); };
      events.addEventListener('VideoPublished', end(() => resolve('published')));
      events.addEventListener('EncodingFailed', end((e) => reject(new Error(`failed: ${e.data}`))));
    });
    const playableSeenAt = Date.now();
    let playback;
    for (;;) {
      const r = await fetch(`/v1/videos/${id}/playback`);
      if (r.ok) { playback = await r.json(); break; }
      await wait(50);
    }
    const video = document.createElement('video');
    video.muted = true;
    document.body.append(video);
    const hls = new window.Hls({ startPosition: 0 });
    const frame = new Promise((resolve, reject) => {
      video.requestVideoFrameCallback(() => resolve(Date.now()));
      hls.on(window.Hls.Events.ERROR, (_, d) => { if (d.fatal) reject(new Error(d.details)); });
    });
    hls.loadSource(playback.hls_url);
    hls.attachMedia(video);
    video.play().catch(() => {});
    const firstFrameAt = await frame;
    hls.destroy();
    return { playableSeenAt, firstFrameAt, statusAtPlay };
  }, id);
  result.ttp_ms = seen.firstFrameAt - t0;
  result.seen_playable_ms = seen.playableSeenAt - t0;
  result.status_at_play = seen.statusAtPlay;
  // The encode's end: the page waits on the video's events again (the stream replays them
  // from the first, so an encode that already ended is seen at once) rather than polling,
  // which would load the server during the progressive paths' encode alone; then the
  // recorded times from the history.
  await page.evaluate((id) => new Promise((resolve, reject) => {
    const events = new EventSource(`/v1/videos/${id}/events`);
    const end = (settle) => (e) => { events.close(); settle(e); };
    events.addEventListener('EncodingCompleted', end(() => resolve()));
    events.addEventListener('EncodingFailed', end((e) => reject(new Error(`failed: ${e.data}`))));
  }), id);
  const history = await api('GET', `/v1/history/${id}?limit=1000`);
  const event = (type) => history.events.find((e) => e.type === type);
  const uploaded = event('SourceUploaded')?.occurred_at;
  const completed = event('EncodingCompleted');
  if (!uploaded || !completed) throw new Error('the history lacks SourceUploaded or EncodingCompleted');
  const playable = event('VideoPlayable')?.occurred_at || completed.occurred_at;
  result.ttc_ms = Date.parse(completed.occurred_at) - Date.parse(uploaded);
  result.playable_ms = Date.parse(playable) - Date.parse(uploaded);
  // The server's CPU seconds over the encode (user + system), as the worker recorded.
  result.cpu_s = completed.data?.cost?.cpu_seconds ?? null;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
