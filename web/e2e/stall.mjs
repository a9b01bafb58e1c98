// Plays a published video from the catalog in headless Chromium on a network that Chromium's
// DevTools protocol shapes, the way a viewer on a train sees it:
//   1. a link about twice what the upper rung's peak needs (hls.js switches up with 1.4×
//      headroom over what it measured, and its first, short segments measure low):
//      playback gets there with a few seconds buffered;
//   2. a trickle, so the buffer drains and playback stalls (a rebuffer starts), and hls.js
//      gives up on the upper rung;
//   3. the link again: playback resumes (the rebuffer ends, with its duration) and the player
//      has switched rungs (a bitrate change, with the new rung's bitrate).
// Prints one JSON line of what it saw; api/tests/web_browser.rs asserts on it and on the lake.
//
// Environment: BASE (the server, authentication off), VIDEO_ID (published, with two rungs or
// more), CHROMIUM (default /usr/bin/chromium), FAST and SLOW (bytes per second; defaults
// 400,000 and 8,000).

import { need, open } from './browser.mjs';

const { BASE, VIDEO_ID } = need('BASE', 'VIDEO_ID');
const FAST = Number(process.env.FAST || 400_000);
const SLOW = Number(process.env.SLOW || 8_000);
const { browser, page } = await open('stall');
const result = { steps: [] };
let snapshot = async () => null;
try {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const shape = (bytesPerSecond) => cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 20,
    downloadThroughput: bytesPerSecond,
    uploadThroughput: -1,
  });
  snapshot = () => page.evaluate(() => {
    const v = document.getElementById('video');
    const buffered = [];
    for (let i = 0; i < v.buffered.length; i += 1) buffered.push([v.buffered.start(i), v.buffered.end(i)]);
    return {
      currentTime: v.currentTime, paused: v.paused, readyState: v.readyState, buffered,
      stats: document.getElementById('player-stats').textContent, qoe: window.vodsourceQoe,
    };
  });

  await page.goto(`${BASE}/#/`);
  const card = page.locator(`#catalog li[data-video-id="${VIDEO_ID}"] button`);
  await card.waitFor({ timeout: 30_000 });
  await shape(FAST);
  await card.click();
  await page.locator('#player').waitFor({ state: 'visible' });
  // 1. Playback reaches the upper rung, a few seconds buffered: hls.js starts on the lowest
  // and switches up from what its first segments measured, and the first two are 2 s each
  // (a short first segment), so the upper rung plays from the third on.
  await page.waitForFunction(() => document.getElementById('video').currentTime >= 8, null, { timeout: 60_000 });
  result.startedWith = await page.textContent('#player-stats');
  result.steps.push('playing');

  // 2. A trickle: what is buffered plays out, then the video waits for data (and hls.js gives
  // up on the upper rung).
  await shape(SLOW);
  const throttledAt = Date.now();
  await page.waitForFunction(() => (window.vodsourceQoe.sent.rebuffer_start || 0) >= 1, null, { timeout: 120_000 });
  result.stalledAfterMs = Date.now() - throttledAt;
  result.stalledAt = await page.evaluate(() => document.getElementById('video').currentTime);
  result.steps.push('stalled');

  // 3. The link comes back: playback resumes, the stall's length goes out, and the player has
  // moved between rungs on the way.
  await shape(FAST);
  await page.waitForFunction(() => (window.vodsourceQoe.sent.rebuffer_end || 0) >= 1, null, { timeout: 60_000 });
  result.steps.push('resumed');
  await page.waitForFunction(() => (window.vodsourceQoe.sent.bitrate_change || 0) >= 1, null, { timeout: 60_000 });
  result.switchedTo = await page.textContent('#player-stats');
  result.steps.push('bitrate switch');
  const from = await page.evaluate(() => document.getElementById('video').currentTime);
  await page.waitForFunction((t) => document.getElementById('video').currentTime > t + 1, from, { timeout: 30_000 });
  result.steps.push('playing on');

  await page.click('#player-close');
  await page.waitForFunction(() => (window.vodsourceQoe.sent.session_end || 0) >= 1, null, { timeout: 15_000 });
  result.qoe = await page.evaluate(() => window.vodsourceQoe);
  result.playerError = await page.textContent('#player-error');
  result.steps.push('closed');
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
  // What the player was doing when it went wrong.
  result.at = await snapshot().catch((err) => String(err));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
