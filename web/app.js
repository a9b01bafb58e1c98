// The vodsource web app: a viewer's catalog, continue watching and player; a creator's
// upload (with progress), live encoding status (the SSE endpoint) and publish. Plain
// modules, no build step; hls.js and dash.js come from npm and are served by the binary.

import { Session } from './qoe.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'vodsource.token';

// ---- the API ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.error ? body.error : { code: `HTTP_${status}`, message: `HTTP ${status}` };
    super(detail.message);
    this.status = status;
    this.code = detail.code;
  }
}

const api = {
  token: localStorage.getItem(TOKEN_KEY) || '',

  headers(extra = {}) {
    const h = { ...extra };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  },

  async call(method, path, body, keepalive = false) {
    const init = { method, headers: this.headers(body ? { 'Content-Type': 'application/json' } : {}), keepalive };
    if (body) init.body = JSON.stringify(body);
    const r = await fetch(path, init);
    const text = await r.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!r.ok) throw new ApiError(r.status, json);
    return json;
  },

  get(path) {
    return this.call('GET', path);
  },
  post(path, body, keepalive) {
    return this.call('POST', path, body || undefined, keepalive);
  },
};

/** Who the token says we are; with authentication off, the server's local admin. */
function whoami() {
  if (!api.token) return { sub: 'local', role: 'admin' };
  try {
    const part = api.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
    return { sub: String(claims.sub || ''), role: String(claims.role || 'viewer') };
  } catch {
    return { sub: '', role: 'viewer' };
  }
}

// ---- sign in ------------------------------------------------------------------------------

async function authenticated() {
  try {
    await api.get('/v1/videos?limit=1');
    return true;
  } catch (e) {
    if (e.status === 401) return false;
    throw e;
  }
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  api.token = $('login-token').value.trim();
  $('login-error').textContent = '';
  if (await authenticated()) {
    localStorage.setItem(TOKEN_KEY, api.token);
    route();
  } else {
    api.token = '';
    $('login-error').textContent = 'The server refused that token.';
  }
});

function showWho() {
  const me = whoami();
  const who = $('who');
  who.textContent = '';
  const name = document.createElement('span');
  name.textContent = api.token ? `${me.sub} (${me.role})` : 'local (authentication off)';
  who.append(name);
  if (api.token) {
    const out = document.createElement('button');
    out.type = 'button';
    out.textContent = 'Sign out';
    out.addEventListener('click', () => {
      localStorage.removeItem(TOKEN_KEY);
      api.token = '';
      route();
    });
    who.append(out);
  }
}

// ---- the catalog and continue watching -----------------------------------------------------

function card(title, sub, onClick, percent) {
  const li = document.createElement('li');
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'card';
  const t = document.createElement('strong');
  t.textContent = title;
  const s = document.createElement('span');
  s.textContent = sub;
  b.append(t, s);
  if (percent !== undefined) {
    const p = document.createElement('progress');
    p.max = 100;
    p.value = percent;
    b.append(p);
  }
  b.addEventListener('click', onClick);
  li.append(b);
  return li;
}

function clock(ms) {
  const s = Math.floor((ms || 0) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

async function showWatch() {
  $('watch').hidden = false;
  const page = await api.get('/v1/videos?published=true&limit=50');
  const list = $('catalog');
  list.textContent = '';
  const titles = new Map();
  for (const v of page.items) {
    titles.set(v.video_id, v.title);
    const li = card(v.title, v.duration_ms ? clock(v.duration_ms) : v.status, () => play(v.video_id, v.title, 0));
    li.dataset.videoId = v.video_id;
    list.append(li);
  }
  $('catalog-empty').hidden = page.items.length > 0;
  await showContinue(titles);
}

async function showContinue(titles) {
  const me = whoami();
  const list = $('continue-list');
  list.textContent = '';
  let items = [];
  try {
    items = (await api.get(`/v1/viewers/${encodeURIComponent(me.sub)}/continue-watching?limit=20`)).items;
  } catch {
    items = [];
  }
  for (const w of items) {
    const title = titles.get(w.video_id) || w.video_id;
    const at = `resume at ${clock(w.position_ms)}`;
    const li = card(title, at, () => play(w.video_id, title, w.position_ms), w.percent_watched);
    li.dataset.videoId = w.video_id;
    li.dataset.positionMs = String(w.position_ms);
    list.append(li);
  }
  $('continue').hidden = items.length === 0;
}

// ---- the player ---------------------------------------------------------------------------

let session = null;
let playing = null;
const DASH_KEY = 'vodsource.dash';
$('use-dash').checked = localStorage.getItem(DASH_KEY) === '1';
// Switching format mid-play starts the other format where this one is.
$('use-dash').addEventListener('change', () => {
  localStorage.setItem(DASH_KEY, $('use-dash').checked ? '1' : '0');
  if (session && playing) play(playing.videoId, playing.title, Math.round($('video').currentTime * 1000));
});

function closePlayer() {
  if (session) session.stop();
  session = null;
  playing = null;
  $('player').hidden = true;
}

async function play(videoId, title, resumeMs) {
  closePlayer();
  playing = { videoId, title };
  $('player').hidden = false;
  $('player-title').textContent = title;
  $('player-error').textContent = '';
  $('player-stats').textContent = '';
  let playback;
  try {
    playback = await api.get(`/v1/videos/${encodeURIComponent(videoId)}/playback`);
  } catch (e) {
    $('player-error').textContent = e.message;
    return;
  }
  session = new Session({
    video: $('video'),
    videoId,
    viewerId: whoami().sub || null,
    post: (path, body, keepalive) => api.post(path, body, keepalive),
    dash: $('use-dash').checked,
    resumeMs,
    onStats: (text) => {
      $('player-stats').textContent = text;
    },
    onError: (text) => {
      $('player-error').textContent = text;
    },
  });
  session.start(playback);
}

$('player-close').addEventListener('click', () => {
  closePlayer();
  if (location.hash === '' || location.hash === '#/') showWatch();
});
window.addEventListener('pagehide', () => {
  if (session) session.stop();
});

// ---- the studio: upload, encoding status, publish -----------------------------------------

// Uploads are resumable (tus, with tus-js-client): bytes go to /v1/uploads, and what the
// server acknowledged survives a broken connection, a pause and a page reload. The upload in
// progress is remembered in localStorage (its video, its URL, how far it got), so after a
// reload the bar shows where it stopped and choosing the same file carries on from there.
const UPLOAD_KEY = 'vodsource.upload';
/** The tus upload running now, if any (pause and resume act on it). */
let running = null;

function savedUpload() {
  try {
    return JSON.parse(localStorage.getItem(UPLOAD_KEY) || 'null');
  } catch {
    return null;
  }
}

function showUploadProgress(sent, total, note) {
  const percent = total > 0 ? Math.floor((sent / total) * 100) : 0;
  $('upload-progress').hidden = false;
  $('upload-bar').value = percent;
  $('upload-text').textContent = `${percent} % of ${(total / 1e6).toFixed(1)} MB${note ? ` — ${note}` : ''}`;
}

/** After a reload: where the remembered upload stopped. */
function showSavedUpload() {
  const saved = savedUpload();
  if (!saved || running) return;
  $('upload-title').value = saved.title;
  showUploadProgress(saved.sent, saved.size, `choose "${saved.name}" again and Upload to resume`);
}

/** Sends `file` as the source of `videoId` with tus, from `url` when it was begun before. */
function sendResumable(file, videoId, url, record) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(file, {
      endpoint: '/v1/uploads',
      uploadUrl: url || null,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      metadata: { video_id: videoId, filename: file.name, filetype: file.type || '' },
      headers: api.token ? { Authorization: `Bearer ${api.token}` } : {},
      storeFingerprintForResuming: false,
      onProgress: (sent, total) => {
        showUploadProgress(sent, total);
        record.url = upload.url;
        record.sent = sent;
        localStorage.setItem(UPLOAD_KEY, JSON.stringify(record));
      },
      onSuccess: () => resolve(),
      onError: (e) => reject(new Error(`the upload failed: ${e.message}`)),
    });
    running = upload;
    upload.start();
  });
}

$('upload-pause').addEventListener('click', () => {
  if (!running) return;
  const button = $('upload-pause');
  if (button.textContent === 'Pause') {
    running.abort();
    button.textContent = 'Resume';
  } else {
    running.start();
    button.textContent = 'Pause';
  }
});

$('upload-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const file = $('upload-file').files[0];
  if (!file) return;
  $('upload-error').textContent = '';
  $('upload-button').disabled = true;
  $('upload-pause').hidden = false;
  $('upload-pause').textContent = 'Pause';
  showUploadProgress(0, file.size);
  try {
    const saved = savedUpload();
    const same = saved && saved.name === file.name && saved.size === file.size
      && saved.lastModified === file.lastModified;
    let record;
    if (same) {
      record = saved;
    } else {
      const registered = await api.post('/v1/videos', {
        title: $('upload-title').value,
        filename: file.name,
        content_type: file.type || 'application/octet-stream',
        size_bytes: file.size,
      });
      record = {
        video_id: registered.video_id, title: $('upload-title').value, name: file.name,
        size: file.size, lastModified: file.lastModified, url: null, sent: 0,
      };
      localStorage.setItem(UPLOAD_KEY, JSON.stringify(record));
    }
    await sendResumable(file, record.video_id, record.url, record);
    localStorage.removeItem(UPLOAD_KEY);
    // The last byte recorded the source; list the video once the catalog has that.
    const history = await api.get(`/v1/history/${record.video_id}`);
    const last = history.events[history.events.length - 1];
    showUploadProgress(file.size, file.size, 'uploaded');
    $('upload-form').reset();
    await showStudio(last ? last.position : undefined);
  } catch (e) {
    $('upload-error').textContent = e.message;
  } finally {
    running = null;
    $('upload-pause').hidden = true;
    $('upload-button').disabled = false;
  }
});

const followers = new Map();
// Bumped on every route change: watchers of a page that is gone stop.
let view = 0;

/** Follows a video's events over SSE (fetch, so the token goes in a header) until it stops. */
async function follow(id, onEvent) {
  if (followers.has(id)) return;
  const abort = new AbortController();
  followers.set(id, abort);
  let last = 0;
  try {
    while (!abort.signal.aborted) {
      const headers = api.headers({ Accept: 'text/event-stream' });
      if (last) headers['Last-Event-ID'] = String(last);
      const r = await fetch(`/v1/videos/${id}/events`, { headers, signal: abort.signal });
      if (!r.ok || !r.body) throw new Error(`events: HTTP ${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let at;
        while ((at = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          const idLine = block.split('\n').find((l) => l.startsWith('id:'));
          if (idLine) last = Number(idLine.slice(3).trim()) || last;
          if (data) {
            try {
              if (onEvent(JSON.parse(data)) === false) abort.abort();
            } catch {
              /* a malformed event is skipped */
            }
          }
        }
      }
    }
  } catch (e) {
    if (!abort.signal.aborted) console.warn(`events of ${id}: ${e.message}`);
  } finally {
    followers.delete(id);
  }
}

/**
 * Shows a video's encoding status until it is ready or failed: read again on every event of
 * the video (at that event's position, so the status view has applied it), and every few
 * seconds in case the event stream drops.
 */
function watchEncoding(id, show) {
  let done = false;
  let timer = null;
  const refresh = async (position) => {
    if (done) return;
    try {
      const at = position ? `?min_position=${position}` : '';
      const s = await api.get(`/v1/videos/${id}/status${at}`);
      show(s);
      if (s.status === 'ready' || s.status === 'failed') {
        done = true;
        clearInterval(timer);
        followers.get(id)?.abort();
      }
    } catch (e) {
      console.warn(`status of ${id}: ${e.message}`);
    }
  };
  const shown = view;
  timer = setInterval(() => {
    if (shown !== view) clearInterval(timer);
    else refresh();
  }, 5_000);
  refresh().then(() => {
    if (!done) follow(id, (event) => {
      refresh(event.position);
    });
  });
}

function stopFollowing() {
  for (const abort of followers.values()) abort.abort();
  followers.clear();
}

function statusText(s) {
  const stage = s.status === 'encoding' && s.encode_stage ? ` · ${s.encode_stage}` : '';
  const pct = s.status === 'encoding' ? ` · ${Math.round(s.percent)} %` : '';
  const playable = s.status === 'encoding' && s.playable ? ' · playable' : '';
  const error = s.last_error ? ` · ${s.last_error}` : '';
  return `${s.status}${playable}${stage}${pct}${error}`;
}

async function showStudio(minPosition) {
  showSavedUpload();
  // The rows are made anew: the old rows' watchers stop.
  view += 1;
  stopFollowing();
  $('studio').hidden = false;
  const me = whoami();
  const owner = api.token ? `&owner=${encodeURIComponent(me.sub)}` : '';
  const after = minPosition ? `&min_position=${minPosition}` : '';
  const page = await api.get(`/v1/videos?limit=50${owner}${after}`);
  const list = $('mine');
  list.textContent = '';
  for (const v of page.items) {
    const li = document.createElement('li');
    li.className = 'row';
    li.dataset.videoId = v.video_id;
    const title = document.createElement('strong');
    title.textContent = v.title;
    const status = document.createElement('span');
    status.className = 'status';
    status.dataset.status = v.status;
    status.textContent = v.status;
    const bar = document.createElement('progress');
    bar.max = 100;
    bar.value = v.status === 'ready' ? 100 : 0;
    const publish = document.createElement('button');
    publish.type = 'button';
    publish.className = 'publish';
    publish.textContent = v.published ? 'Unpublish' : 'Publish';
    // Publishable once it plays: while encoding (playable) or encoded.
    publish.disabled = !v.playable && v.status !== 'ready';
    const watch = document.createElement('button');
    watch.type = 'button';
    watch.className = 'play';
    watch.textContent = 'Play';
    watch.disabled = !v.published;
    let published = v.published;
    publish.addEventListener('click', async () => {
      publish.disabled = true;
      try {
        const done = await api.post(`/v1/videos/${v.video_id}/${published ? 'unpublish' : 'publish'}`);
        published = !published;
        // Read our own write: wait until the catalog has it.
        await api.get(`/v1/videos/${v.video_id}?min_position=${done.position}`);
        publish.textContent = published ? 'Unpublish' : 'Publish';
        watch.disabled = !published;
      } catch (e) {
        $('upload-error').textContent = e.message;
      } finally {
        publish.disabled = false;
      }
    });
    watch.addEventListener('click', () => play(v.video_id, v.title, 0));
    li.append(title, status, bar, publish, watch);
    list.append(li);
    if (v.status !== 'ready' && v.status !== 'failed' && v.status !== 'deleted') {
      watchEncoding(v.video_id, (s) => {
        status.dataset.status = s.status;
        status.textContent = statusText(s);
        bar.value = s.status === 'ready' ? 100 : s.percent;
        status.dataset.playable = s.playable ? 'true' : 'false';
        publish.disabled = !s.playable && s.status !== 'ready';
      });
    }
  }
}

// ---- routing --------------------------------------------------------------------------------

async function route() {
  view += 1;
  stopFollowing();
  for (const id of ['login', 'watch', 'studio']) $(id).hidden = true;
  if (!(await authenticated())) {
    api.token = '';
    localStorage.removeItem(TOKEN_KEY);
    $('who').textContent = '';
    $('login').hidden = false;
    return;
  }
  showWho();
  try {
    if (location.hash.startsWith('#/studio')) await showStudio();
    else await showWatch();
  } catch (e) {
    $('upload-error').textContent = e.message;
  }
}

window.addEventListener('hashchange', () => {
  closePlayer();
  route();
});
route();
