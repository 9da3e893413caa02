// Attachments: uploads with progress, and previews/downloads fetched with the bearer token (an
// <img src> cannot send one) and shown through blob: URLs.

export class MediaClient {
  constructor(api) {
    this.api = api;
    this._urls = new Map(); // key -> Promise<blob URL>
  }

  upload(file, onProgress, signal) {
    return this.api.upload('/api/v1/media', file, onProgress, signal);
  }

  _url(key, path) {
    if (!this._urls.has(key)) {
      const made = this.api.blob(path).then((blob) => URL.createObjectURL(blob));
      made.catch(() => this._urls.delete(key)); // a failure may be retried later
      this._urls.set(key, made);
    }
    return this._urls.get(key);
  }

  previewUrl(media) {
    return this._url(`p:${media.id}`, `/api/v1/media/${encodeURIComponent(media.id)}/preview`);
  }

  fileUrl(media) {
    return this._url(`f:${media.id}`, `/api/v1/media/${encodeURIComponent(media.id)}`);
  }

  /** Show our own upload from the local file until (and instead of) fetching its preview. */
  seedPreview(media, file) {
    if (file.type.startsWith('image/')) this._urls.set(`p:${media.id}`, Promise.resolve(URL.createObjectURL(file)));
  }

  clear() {
    for (const made of this._urls.values()) made.then((url) => URL.revokeObjectURL(url), () => {});
    this._urls.clear();
  }
}

export function isImage(media) {
  return String(media.content_type).startsWith('image/');
}
