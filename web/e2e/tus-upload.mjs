// Uploads FILE with tus-js-client (Node) to ENDPOINT as the source of VIDEO_ID, retrying
// after every broken connection from the offset the server acknowledged. Prints one JSON
// line: the upload's URL and how many times it retried, or the error.
import * as fs from 'node:fs';
import * as tus from 'tus-js-client';

const { ENDPOINT, FILE, VIDEO_ID, TOKEN, RETRY_MS } = process.env;
let retries = 0;
const offsets = [];
const upload = new tus.Upload(fs.createReadStream(FILE), {
  endpoint: ENDPOINT,
  uploadSize: fs.statSync(FILE).size,
  metadata: { filename: 'source.mp4', filetype: 'video/mp4', video_id: VIDEO_ID },
  headers: TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {},
  retryDelays: Array(40).fill(Number(RETRY_MS || 50)),
  onShouldRetry: (error) => {
    retries += 1;
    const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
    return status === 0 || status === 409 || status === 423 || status >= 500;
  },
  onAfterResponse: (req, res) => {
    if (req.getMethod() === 'HEAD') offsets.push(Number(res.getHeader('Upload-Offset')));
  },
  onError: (error) => {
    console.log(JSON.stringify({ error: String(error), retries, offsets }));
    process.exit(1);
  },
  onSuccess: () => {
    console.log(JSON.stringify({ url: upload.url, retries, offsets }));
  },
});
upload.start();
