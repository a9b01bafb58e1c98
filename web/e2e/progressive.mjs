// Plays a video that is still encoding, from the catalog, in headless Chromium: with hls.js
// in one page and, at the same time, with dash.js in another (the web app's DASH toggle). The
// video was registered to publish itself once playable. In each page playback must start
// while the status says `encoding` and go on for PLAY_SECONDS without the video element
// waiting for data. Records the playlists and MPDs each player loaded, as it loaded them (the
// first ones still growing), so that the test can compare them with the final ones.
// Prints one JSON line of what it saw; api/tests/web_progressive.rs asserts on it.
//
// Environment: BASE (the server, authentication off), VIDEO_ID (published, playable),
// CHROMIUM (default /usr/bin/chromium), PLAY_SECONDS (default 30).

import { need, open } from './browser.mjs';

const { BASE, VIDEO_ID } = need('BASE', 'VIDEO_ID');
const PLAY_SECONDS = Number(process.env.PLAY_SECONDS || 30);
const { browser, page } = await open('progressive hls.js');
const result = { steps: [] };

/** Plays the video from the catalog in `tab`, with dash.js when `dash`: what it saw. */
async function play(tab, dash) {
  // The first load of each playlist or MPD with its text; later loads counted.
  const seen = { manifests: [], reloads: {} };
  tab.on('response', async (r) => {
    const url = r.url();
    if (!/\/media\/.*(\/index\.m3u8|\.mpd)(\?|#|$)/.test(url)) return;
    if (seen.manifests.some((m) => m.url === url)) {
      seen.reloads[url] = (seen.reloads[url] || 0) + 1;
      return;
    }
    try {
      seen.manifests.push({ url, status: r.status(), at: Date.now(), text: await r.text() });
    } catch {
      // A response the page dropped.
    }
  });
  try {
    await tab.goto(`${BASE}/#/`);
    if (dash) await tab.check('#use-dash');
    const card = tab.locator(`#catalog li[data-video-id="${VIDEO_ID}"] button`);
    await card.waitFor({ timeout: 30_000 });
    const clicked = Date.now();
    await card.click();
    await tab.locator('#player').waitFor({ state: 'visible' });
    await tab.evaluate(() => {
      const v = document.getElementById('video');
      window.progressive = { waiting: 0, waitedAt: [] };
      v.addEventListener('playing', () => {
        if (window.progressive.firstFrameAt === undefined) window.progressive.firstFrameAt = Date.now();
      });
      v.addEventListener('waiting', () => {
        // Only after the first frame and past the first half second: before, waiting is
        // start-up (dash.js seeks over the 0.08 s before the first video frame).
        if (window.progressive.firstFrameAt === undefined || v.currentTime < 0.5) return;
        window.progressive.waiting += 1;
        window.progressive.waitedAt.push(v.currentTime);
        // What was buffered then, and how long after the first frame: a wait at the end of
        // what is buffered, with the playlist far ahead, is the page starved, not the encode.
        const buffered = [];
        for (let i = 0; i < v.buffered.length; i += 1) buffered.push([v.buffered.start(i), v.buffered.end(i)]);
        const at = Date.now();
        (window.progressive.waits ||= []).push({
          t: v.currentTime, buffered, readyState: v.readyState, afterFirstFrameMs: at - window.progressive.firstFrameAt, at,
        });
      });
      v.addEventListener('playing', () => {
        const last = (window.progressive.waits || []).at(-1);
        if (last && last.resumedAfterMs === undefined) last.resumedAfterMs = Date.now() - last.at;
      });
    });
    await tab.waitForFunction(() => document.getElementById('video').currentTime > 0, null, { timeout: 60_000 });
    seen.startupMs = Date.now() - clicked;
    // What the API said when playback had started.
    seen.statusAtStart = await tab.evaluate(async (id) => (await fetch(`/v1/videos/${id}/status`)).json(), VIDEO_ID);
    const from = await tab.evaluate(() => document.getElementById('video').currentTime);
    seen.startedAt = from;
    await tab.waitForFunction(
      (t) => document.getElementById('video').currentTime >= t,
      from + PLAY_SECONDS,
      { timeout: (PLAY_SECONDS + 30) * 1000, polling: 250 },
    );
    seen.progressive = await tab.evaluate(() => window.progressive);
    seen.qoe = await tab.evaluate(() => window.vodsourceQoe);
    seen.reachedAt = await tab.evaluate(() => document.getElementById('video').currentTime);
    seen.statusAfter = await tab.evaluate(async (id) => (await fetch(`/v1/videos/${id}/status`)).json(), VIDEO_ID);
    seen.playerError = await tab.textContent('#player-error');
    await tab.click('#player-close');
  } catch (e) {
    seen.error = String(e && e.stack ? e.stack : e);
    seen.at = await tab.evaluate(() => {
      const v = document.getElementById('video');
      const buffered = [];
      for (let i = 0; i < v.buffered.length; i += 1) buffered.push([v.buffered.start(i), v.buffered.end(i)]);
      return {
        currentTime: v.currentTime, readyState: v.readyState, buffered,
        progressive: window.progressive, error: document.getElementById('player-error').textContent,
      };
    }).catch((err) => String(err));
  }
  return seen;
}

try {
  // A page of its own (its own browser context, so its own DASH toggle) for dash.js.
  const dashPage = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  dashPage.on('console', (m) => console.error(`[progressive dash.js] console.${m.type()}: ${m.text()}`));
  dashPage.on('pageerror', (e) => console.error(`[progressive dash.js] page error: ${e.message}`));
  const [hls, dash] = await Promise.all([play(page, false), play(dashPage, true)]);
  result.hls = hls;
  result.dash = dash;
  const failed = [['hls.js', hls], ['dash.js', dash]].filter(([, s]) => s.error);
  if (failed.length) throw new Error(failed.map(([name, s]) => `${name}: ${s.error}`).join('\n'));
  result.steps.push(`both played ${PLAY_SECONDS} s`);
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
// Written before exiting: a pipe takes a long line in pieces.
process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(result.error ? 1 : 0));
