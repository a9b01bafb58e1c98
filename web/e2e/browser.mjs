// What the browser scripts share: the environment they need, Debian's headless Chromium with
// the flags this machine needs (see ../shared/SERVICES.md), and a page that logs what it says.

import { chromium } from 'playwright-core';

/** The named environment variables; a missing one is an error that names it. */
export function need(...names) {
  const values = {};
  for (const name of names) {
    if (!process.env[name]) throw new Error(`${name} is not set`);
    values[name] = process.env[name];
  }
  return values;
}

/** Headless Chromium (CHROMIUM, default /usr/bin/chromium) and a page whose console,
 * errors and failed responses go to stderr under `tag`. */
export async function open(tag) {
  const log = (...args) => console.error(`[${tag}]`, ...args);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (m) => log(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log(`page error: ${e.message}`));
  page.on('response', (r) => { if (r.status() >= 400) log(`${r.status()} ${r.url()}`); });
  return { browser, page, log };
}
