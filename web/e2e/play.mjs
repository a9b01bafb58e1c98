// Drives the web app in headless Chromium (Debian's, through playwright-core) as a creator
// and viewer would: sign in with a token (when BASE wants one), upload CLIP with the progress
// bar, wait for the encoding to finish (live status), publish, play for 5 s, seek, play on
// until a heartbeat went out, close the player, find the video under "continue watching", and
// resume it from there with the DASH toggle on (dash.js).
// Prints one JSON line of what it saw; api/tests/web_browser.rs asserts on it and on the lake.
//
// Environment: BASE (the server), CLIP (a video file), TITLE, SCREENSHOT (a .png to write),
// TOKEN (optional bearer token), CHROMIUM (default /usr/bin/chromium).

import { need, open } from './browser.mjs';

const { BASE, CLIP, TITLE, SCREENSHOT } = need('BASE', 'CLIP', 'TITLE', 'SCREENSHOT');
const { TOKEN } = process.env;
const { browser, page } = await open('play');
const result = { steps: [] };
try {
  await page.goto(`${BASE}/#/studio`);
  if (TOKEN) {
    await page.locator('#login').waitFor({ state: 'visible' });
    await page.fill('#login-token', TOKEN);
    await page.click('#login-form button[type=submit]');
    result.steps.push('signed in');
  }
  await page.locator('#upload-form').waitFor({ state: 'visible' });
  result.who = await page.textContent('#who');

  // Upload, watching the progress bar.
  await page.fill('#upload-title', TITLE);
  await page.setInputFiles('#upload-file', CLIP);
  await page.click('#upload-button');
  await page.waitForFunction(() => document.getElementById('upload-bar').value === 100, null, { timeout: 60_000 });
  const row = page.locator('#mine li.row', { hasText: TITLE });
  await row.waitFor({ timeout: 30_000 });
  result.videoId = await row.getAttribute('data-video-id');
  result.steps.push('uploaded');

  // Encoding progress arrives over SSE; the row turns ready.
  const seen = new Set();
  const deadline = Date.now() + 240_000;
  for (;;) {
    const status = await row.locator('.status').getAttribute('data-status');
    seen.add(await row.locator('.status').textContent());
    if (status === 'ready') break;
    if (status === 'failed') throw new Error(`encoding failed: ${[...seen].join(' | ')}`);
    if (Date.now() > deadline) throw new Error(`not ready in 240 s: ${[...seen].join(' | ')}`);
    await page.waitForTimeout(250);
  }
  result.statuses = [...seen];
  result.steps.push('ready');

  // Publish, then play.
  await row.locator('button.publish').click();
  await row.locator('button.play:not([disabled])').waitFor({ timeout: 30_000 });
  result.steps.push('published');
  await row.locator('button.play').click();
  await page.locator('#player').waitFor({ state: 'visible' });
  await page.evaluate(() => {
    const v = document.getElementById('video');
    window.maxTime = 0;
    v.addEventListener('timeupdate', () => { window.maxTime = Math.max(window.maxTime, v.currentTime); });
  });
  await page.waitForFunction(() => document.getElementById('video').currentTime > 0, null, { timeout: 30_000 });
  const startedAt = Date.now();
  await page.waitForFunction(() => document.getElementById('video').currentTime >= 5, null, { timeout: 30_000 });
  result.playedMs = Date.now() - startedAt;
  result.maxTime = await page.evaluate(() => Math.max(window.maxTime, document.getElementById('video').currentTime));
  result.steps.push('played');

  // Seek back, as a viewer dragging the playhead would, and play on to the first heartbeat.
  await page.evaluate(() => new Promise((resolve) => {
    const v = document.getElementById('video');
    v.addEventListener('seeked', resolve, { once: true });
    v.currentTime = 1;
  }));
  result.afterSeek = await page.evaluate(() => document.getElementById('video').currentTime);
  await page.waitForFunction(() => (window.vodsourceQoe.sent.heartbeat || 0) >= 1, null, { timeout: 30_000 });
  result.steps.push('heartbeat');
  await page.locator('#player').screenshot({ path: SCREENSHOT });
  result.stats = await page.textContent('#player-stats');
  result.playerError = await page.textContent('#player-error');

  // Close the player: the session's last position and its end go out.
  await page.click('#player-close');
  await page.waitForFunction(() => (window.vodsourceQoe.sent.session_end || 0) >= 1, null, { timeout: 15_000 });
  result.qoe = await page.evaluate(() => window.vodsourceQoe);
  result.steps.push('closed');

  // The watch page lists the video under "continue watching" once the watch state has it.
  const resumeDeadline = Date.now() + 60_000;
  await page.goto(`${BASE}/#/`);
  for (;;) {
    await page.reload();
    await page.locator('#watch').waitFor({ state: 'visible' });
    await page.waitForLoadState('networkidle');
    const item = page.locator(`#continue-list li[data-video-id="${result.videoId}"]`);
    if (await item.count() > 0) {
      result.resumeMs = Number(await item.getAttribute('data-position-ms'));
      result.resumeText = await item.textContent();
      break;
    }
    if (Date.now() > resumeDeadline) throw new Error('the video never showed under continue watching');
    await page.waitForTimeout(500);
  }
  result.steps.push('continue watching');

  // Resume from there with the DASH toggle on: dash.js plays the MPD from the saved position.
  await page.check('#use-dash');
  await page.locator(`#continue-list li[data-video-id="${result.videoId}"] button`).click();
  await page.locator('#player').waitFor({ state: 'visible' });
  await page.waitForFunction(() => document.getElementById('video').currentTime > 0, null, { timeout: 30_000 });
  result.dashStart = await page.evaluate(() => document.getElementById('video').currentTime);
  const dashFrom = await page.evaluate(() => document.getElementById('video').currentTime);
  await page.waitForFunction((t) => document.getElementById('video').currentTime > t + 1, dashFrom, { timeout: 30_000 });
  result.dashError = await page.textContent('#player-error');
  await page.click('#player-close');
  await page.waitForFunction(() => (window.vodsourceQoe.sent.session_end || 0) >= 1, null, { timeout: 15_000 });
  result.dashSid = await page.evaluate(() => window.vodsourceQoe.sid);
  result.steps.push('dash');
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
