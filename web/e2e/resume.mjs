// A resumable upload in headless Chromium, the way a creator on a slow link lives it: start
// uploading CLIP on a link the DevTools protocol shapes to UPLOAD_RATE bytes a second, reload
// the page once the bar is past a third, see the bar still there after the reload, choose the
// same file again and upload: it carries on from where the server had got to (not from zero)
// and the video encodes.
// Prints one JSON line of what it saw; api/tests/web_browser.rs asserts on it.
//
// Environment: BASE (the server, authentication off), CLIP, TITLE, CHROMIUM (default
// /usr/bin/chromium), UPLOAD_RATE (default 400,000).

import { need, open } from './browser.mjs';

const { BASE, CLIP, TITLE } = need('BASE', 'CLIP', 'TITLE');
const RATE = Number(process.env.UPLOAD_RATE || 400_000);
const { browser, page } = await open('resume');
const result = { steps: [], offsets: [] };
try {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 5, downloadThroughput: -1, uploadThroughput: RATE,
  });
  // The offsets the client asks the server for when it resumes.
  page.on('response', (r) => {
    if (r.request().method() === 'HEAD' && r.url().includes('/v1/uploads/')) {
      result.offsets.push(Number(r.headers()['upload-offset']));
    }
  });
  const bar = () => page.evaluate(() => document.getElementById('upload-bar').value);

  await page.goto(`${BASE}/#/studio`);
  await page.locator('#upload-form').waitFor({ state: 'visible' });
  await page.fill('#upload-title', TITLE);
  await page.setInputFiles('#upload-file', CLIP);
  await page.click('#upload-button');
  await page.waitForFunction(() => document.getElementById('upload-bar').value >= 35, null, { timeout: 120_000 });
  result.beforeReload = await bar();
  result.steps.push('part-way');

  await page.reload();
  await page.locator('#upload-form').waitFor({ state: 'visible' });
  await page.waitForFunction(() => !document.getElementById('upload-progress').hidden, null, { timeout: 10_000 });
  result.afterReload = await bar();
  result.afterReloadText = await page.textContent('#upload-text');
  result.steps.push('reloaded');

  await page.setInputFiles('#upload-file', CLIP);
  await page.click('#upload-button');
  await page.waitForFunction(() => document.getElementById('upload-text').textContent.includes('uploaded'), null, { timeout: 120_000 });
  result.steps.push('uploaded');
  const row = page.locator('#mine li').first();
  await row.waitFor({ timeout: 30_000 });
  result.videoId = await row.getAttribute('data-video-id');
  result.steps.push('listed');
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
}
await browser.close();
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
