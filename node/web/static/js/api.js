// REST client: JSON in and out, the bearer token added, a 401 answered by one quiet refresh and a
// retry, and every failure turned into an ApiError carrying the contract's error code.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status; // 0: the network, not the node
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export async function errorFrom(response) {
  let code = 'http_error';
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not JSON: keep the status text
  }
  const retry = Number(response.headers.get('Retry-After'));
  return new ApiError(response.status, code, message, Number.isFinite(retry) && retry > 0 ? retry : null);
}

function networkError() {
  return new ApiError(0, 'network', 'The server cannot be reached.');
}

/**
 * POST a JSON body outside the Api's refresh logic (sign-in, sign-up, refresh, sign-out).
 * `token`: a bearer token to send; `keepalive` lets the request finish even if the page
 * navigates away meanwhile.
 */
export async function postJson(path, body, { keepalive = false, token = null } = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      credentials: 'omit',
      keepalive,
    });
  } catch {
    throw networkError();
  }
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

export class Api {
  constructor(session) {
    this.session = session;
  }

  async _send(method, path, { body, headers = {} } = {}, token) {
    const init = { method, headers: { ...headers }, credentials: 'omit' };
    if (token) init.headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    try {
      return await fetch(path, init);
    } catch {
      throw networkError();
    }
  }

  /** The raw Response of an authenticated call (after at most one refresh on 401). */
  async raw(method, path, options = {}) {
    let token = await this.session.freshToken();
    let response = await this._send(method, path, options, token);
    if (response.status === 401) {
      token = await this.session.refresh(token);
      response = await this._send(method, path, options, token);
      if (response.status === 401) this.session.signOut('expired');
    }
    return response;
  }

  async request(method, path, options = {}) {
    const response = await this.raw(method, path, options);
    if (!response.ok) throw await errorFrom(response);
    return response.status === 204 ? null : response.json();
  }

  get(path) {
    return this.request('GET', path);
  }

  post(path, body) {
    return this.request('POST', path, { body });
  }

  async blob(path) {
    const response = await this.raw('GET', path);
    if (!response.ok) throw await errorFrom(response);
    return response.blob();
  }

  /**
   * Upload raw bytes with progress (fetch has no upload progress, XMLHttpRequest does).
   * Resolves with the Media object; `signal` aborts.
   */
  async upload(path, file, onProgress, signal) {
    let token = await this.session.freshToken();
    for (let attempt = 0; ; attempt += 1) {
      const result = await xhrUpload(path, file, token, onProgress, signal);
      if (result.status === 401 && attempt === 0) {
        token = await this.session.refresh(token);
        continue;
      }
      if (result.status >= 200 && result.status < 300) return JSON.parse(result.body);
      let code = 'http_error';
      let message = `HTTP ${result.status}`;
      try {
        ({ code, message } = JSON.parse(result.body).error);
      } catch {
        // not JSON
      }
      throw new ApiError(result.status, code, message);
    }
  }
}

function xhrUpload(path, file, token, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener('load', () => resolve({ status: xhr.status, body: xhr.responseText }));
    xhr.addEventListener('error', () => reject(networkError()));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'Upload cancelled.')));
    if (signal) signal.addEventListener('abort', () => xhr.abort(), { once: true });
    xhr.send(file);
  });
}
