-- Media: uploads (metadata always here; bytes here or in an S3-compatible store), their bytes in
-- chunked rows when PostgreSQL is the store, and the index that answers "is this media attached
-- to a message of a chat I am in" from the messages themselves.

CREATE TABLE media (
    -- 128 random bits, URL-safe base64: unguessable, so ids cannot be enumerated
    id           text PRIMARY KEY,
    owner_id     bigint NOT NULL REFERENCES users,
    -- taken from the bytes and checked against an allowlist; never the client's word alone
    content_type text NOT NULL,
    -- of the bytes as stored (images are stored without their metadata)
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       text NOT NULL,
    width        int,
    height       int,
    -- size of the small preview image; NULL: there is none
    preview_size bigint,
    -- where the bytes are ('postgres' or 's3'): media stay readable after the setting changes
    store        text NOT NULL CHECK (store IN ('postgres', 's3')),
    -- last named in a send's attachments: an upload is not cleaned up while a send may be using it
    claimed_at   timestamptz,
    -- set by the cleanup once a stored message refers to it; attached media are kept for good
    attached     boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- what the cleanup looks at: uploads not yet known to be attached, oldest first
CREATE INDEX media_unattached_age ON media ((coalesce(claimed_at, created_at))) WHERE NOT attached;

-- The bytes of media kept in PostgreSQL: one row per chunk, so that neither an upload nor a
-- download holds a whole file in memory and a download fetches one chunk per short query.
CREATE TABLE media_chunks (
    media_id text NOT NULL REFERENCES media ON DELETE CASCADE,
    variant  text NOT NULL CHECK (variant IN ('original', 'preview')),
    -- offset of the chunk's first byte in the file
    pos      bigint NOT NULL CHECK (pos >= 0),
    data     bytea NOT NULL,
    PRIMARY KEY (media_id, variant, pos)
);
-- media is compressed already: keep chunks out of line and uncompressed (no pglz work either way)
ALTER TABLE media_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Who may fetch a media: its uploader, and members of a chat where a stored message carries it
-- (messages.attachments holds the Media objects, `[{"id": ...}, ...]`). A containment query
-- `attachments @> '[{"id": "..."}]'` uses this index; only messages with attachments are in it,
-- so text messages cost nothing more to store. fastupdate is off: a pending list would be scanned
-- whole by every lookup (milliseconds each, measured), where a direct lookup takes microseconds.
CREATE INDEX messages_attachments ON messages USING gin (attachments jsonb_path_ops)
    WITH (fastupdate = off) WHERE attachments <> '[]'::jsonb;
