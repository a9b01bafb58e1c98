// Uppy's S3 multipart plugin (@uppy/aws-s3 in Companion mode, from the published `uppy`
// bundle) uploads FILE straight to the bucket through the calls at ENDPOINT (the registration's
// `multipart.endpoint`), in parts of PART_SIZE bytes, in headless Chromium. The first attempt
// at part 2 is cut off (the connection reset), and once part 1 is on its way the upload is
// paused and resumed: Uppy asks which parts the bucket has (ListParts) and sends the rest.
// Prints one JSON line of what it saw; api/tests/direct_s3.rs asserts on it.
//
// Environment: BASE (the API), ENDPOINT, FILE, PART_SIZE, CHROMIUM (default /usr/bin/chromium).

import { fileURLToPath } from 'node:url';
import { need, open } from './browser.mjs';

const { BASE, ENDPOINT, FILE, PART_SIZE } = need('BASE', 'ENDPOINT', 'FILE', 'PART_SIZE');
const bundle = fileURLToPath(new URL('../node_modules/uppy/dist/uppy.min.js', import.meta.url));
const { browser, page } = await open('uppy');
const result = { cut: 0, listed: 0, puts: 0, events: [] };
try {
  // A part's PUT carries partNumber and uploadId in its presigned URL.
  const part = (url) => new URL(url).searchParams.get('partNumber');
  await page.route((url) => part(url.href) === '2', async (route) => {
    if (route.request().method() === 'PUT' && result.cut === 0) {
      result.cut += 1;
      return route.abort('connectionreset');
    }
    return route.continue();
  });
  page.on('request', (r) => {
    if (r.method() === 'PUT' && part(r.url())) result.puts += 1;
    if (r.method() === 'GET' && /\/s3\/multipart\/[0-9a-f]{32}\?/.test(r.url())) result.listed += 1;
  });
  // A page of the API's origin (no script policy on it), with Uppy and an input for the file.
  await page.goto(`${BASE}/livez`);
  await page.addScriptTag({ path: bundle });
  await page.evaluate(() => {
    const input = document.createElement('input');
    input.type = 'file';
    input.id = 'file';
    document.body.appendChild(input);
  });
  await page.setInputFiles('#file', FILE);
  const outcome = await page.evaluate(({ endpoint, partSize }) => new Promise((resolve) => {
    const events = [];
    const file = document.getElementById('file').files[0];
    const uppy = new window.Uppy.Uppy({ autoProceed: false });
    uppy.use(window.Uppy.AwsS3, {
      companionEndpoint: endpoint,
      shouldUseMultipart: true,
      getChunkSize: () => partSize,
    });
    const id = uppy.addFile({ name: file.name, type: 'video/mp4', data: file });
    let paused = false;
    let retries = 0;
    uppy.on('upload-progress', (_, progress) => {
      if (!paused && progress.bytesUploaded > 0) {
        paused = true;
        uppy.pauseResume(id);
        events.push('paused');
        uppy.pauseResume(id);
        events.push('resumed');
      }
    });
    uppy.on('upload-error', (_, error) => {
      events.push(`error: ${error.message}`);
      if (retries < 3) {
        retries += 1;
        events.push('retried');
        uppy.retryUpload(id);
      } else {
        resolve({ events, error: error.message });
      }
    });
    uppy.on('upload-success', (_, response) => resolve({ events, response: response.body || response }));
    // Its promise settles with the first attempt; the events above tell the outcome.
    uppy.upload().catch((e) => events.push(`upload(): ${e}`));
  }), { endpoint: ENDPOINT, partSize: Number(PART_SIZE) });
  result.events = outcome.events;
  result.response = outcome.response;
  if (outcome.error) result.error = outcome.error;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
}
await browser.close();
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
