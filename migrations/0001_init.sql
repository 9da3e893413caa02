-- Users, refresh tokens, chats, members, messages and per-device delivery cursors.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- usernames are unique regardless of case ("Alice" cannot impersonate "alice")
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));
CREATE INDEX users_username_prefix ON users (lower(username) text_pattern_ops);

-- Opaque refresh tokens, stored as SHA-256 digests. A login starts a family; each refresh spends
-- one token and issues the next in the same family; presenting a spent one revokes the family.
CREATE TABLE refresh_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    family_id   uuid NOT NULL,
    user_id     bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    spent_at    timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE chats (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('direct', 'group')),
    title            text,
    owner_id         bigint REFERENCES users ON DELETE SET NULL,
    -- 'lo:hi' user ids of a direct chat: at most one direct chat per pair
    direct_key       text UNIQUE,
    -- the highest seq assigned; only the chat's actor moves it (see post_messages)
    last_seq         bigint NOT NULL DEFAULT 0,
    -- bumped by every membership change, so a chat actor knows its member cache is stale
    members_version  bigint NOT NULL DEFAULT 0,
    -- fencing token: the epoch of the chat actor allowed to write; taking ownership bumps it
    epoch            bigint NOT NULL DEFAULT 0,
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);

CREATE TABLE chat_members (
    chat_id    bigint NOT NULL REFERENCES chats ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    -- the chat's last_seq when this user joined: live delivery starts above it
    joined_seq bigint NOT NULL,
    read_seq   bigint NOT NULL DEFAULT 0,
    joined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX chat_members_user ON chat_members (user_id);

CREATE TABLE messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chat_id       bigint NOT NULL REFERENCES chats ON DELETE CASCADE,
    seq           bigint NOT NULL,
    sender_id     bigint NOT NULL REFERENCES users,
    client_msg_id text NOT NULL,
    text          text NOT NULL,
    attachments   jsonb NOT NULL DEFAULT '[]',
    -- the fencing epoch of the chat actor that wrote it
    epoch         bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (chat_id, seq),
    UNIQUE (sender_id, client_msg_id)
);

-- How far each device of a user has acknowledged each chat. Absent: nothing acked yet, the device
-- starts at the member's joined_seq.
CREATE TABLE device_cursors (
    user_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    device_id  text NOT NULL,
    chat_id    bigint NOT NULL REFERENCES chats ON DELETE CASCADE,
    acked_seq  bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device_id, chat_id)
);

-- Every device a user has connected with; epoch fences cursor writes of a superseded connection.
CREATE TABLE devices (
    user_id      bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    device_id    text NOT NULL,
    epoch        bigint NOT NULL DEFAULT 0,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device_id)
);

-- The chat actor's group commit: one call stores a batch of sends in one transaction.
--
-- For each input row (ordinal idx) it returns a status and the message it refers to:
--   created     stored now, with the next seq (gap-free: seqs are given only to created rows)
--   duplicate   the sender already sent this client_msg_id to this chat: the original message
--   conflict    the sender used this client_msg_id in another chat: that message
--   not_member  the sender is not a member: no message
-- Raises SQLSTATE MF001 when p_epoch is not the chat's current epoch (a fenced-out actor), and
-- MN001 when the chat does not exist. The caller passes distinct (sender, client_msg_id) pairs;
-- p_attachments holds one JSON array (as text) per row.
CREATE FUNCTION post_messages(
    p_chat bigint, p_epoch bigint,
    p_senders bigint[], p_cmids text[], p_texts text[], p_attachments text[]
) RETURNS TABLE (
    idx int, status text, members_version bigint,
    id bigint, chat_id bigint, seq bigint, sender_id bigint, client_msg_id text,
    text text, attachments jsonb, created_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_last bigint;
    v_epoch bigint;
BEGIN
    SELECT c.last_seq, c.epoch INTO v_last, v_epoch FROM chats c WHERE c.id = p_chat FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'chat % does not exist', p_chat USING ERRCODE = 'MN001';
    END IF;
    IF v_epoch <> p_epoch THEN
        RAISE EXCEPTION 'chat % is owned at epoch %, not %', p_chat, v_epoch, p_epoch
            USING ERRCODE = 'MF001';
    END IF;

    RETURN QUERY
    WITH input AS (
        SELECT t.ord::int AS i, t.sender, t.cmid, t.body, t.att
        FROM unnest(p_senders, p_cmids, p_texts, p_attachments)
             WITH ORDINALITY AS t(sender, cmid, body, att, ord)
    ), classified AS (
        SELECT i.*, (cm.user_id IS NOT NULL) AS is_member, m.id AS existing_id,
               m.chat_id AS existing_chat
        FROM input i
        LEFT JOIN chat_members cm ON cm.chat_id = p_chat AND cm.user_id = i.sender
        LEFT JOIN messages m ON m.sender_id = i.sender AND m.client_msg_id = i.cmid
    ), fresh AS (
        SELECT c.*, v_last + row_number() OVER (ORDER BY c.i) AS new_seq
        FROM classified c
        WHERE c.is_member AND c.existing_id IS NULL
    ), inserted AS (
        INSERT INTO messages AS m (chat_id, seq, sender_id, client_msg_id, text, attachments, epoch)
        SELECT p_chat, f.new_seq, f.sender, f.cmid, f.body, f.att::jsonb, p_epoch FROM fresh f
        RETURNING m.*
    ), bumped AS (
        UPDATE chats c
        SET last_seq = v_last + (SELECT count(*) FROM fresh),
            last_activity_at = CASE WHEN EXISTS (SELECT 1 FROM fresh) THEN now()
                                    ELSE c.last_activity_at END
        WHERE c.id = p_chat
        RETURNING c.members_version
    )
    SELECT c.i,
           CASE WHEN c.existing_id IS NOT NULL AND c.existing_chat <> p_chat THEN 'conflict'
                WHEN c.existing_id IS NOT NULL THEN 'duplicate'
                WHEN NOT c.is_member THEN 'not_member'
                ELSE 'created' END,
           (SELECT b.members_version FROM bumped b),
           r.id, r.chat_id, r.seq, r.sender_id, r.client_msg_id, r.text, r.attachments,
           r.created_at
    FROM classified c
    LEFT JOIN LATERAL (
        SELECT ins.* FROM inserted ins
        WHERE ins.sender_id = c.sender AND ins.client_msg_id = c.cmid
        UNION ALL
        SELECT old.* FROM messages old WHERE old.id = c.existing_id
    ) r ON true
    ORDER BY c.i;
END;
$$;

-- The group commit of several chats in one transaction (one call per batch of batches).
-- Rows belong to chat p_chats[p_row_chat[i]]; each chat is written at its own epoch. Per chat, the
-- common case is one INSERT (every row new and from a member); when that does not hold, the rows
-- it inserted are taken back and post_messages sorts each row out. Result as post_messages, idx
-- being the row's index in the input arrays; a chat that does not exist gives status 'missing',
-- one owned at another epoch 'fenced' (nothing is written for it), without failing the others.
CREATE FUNCTION store_batches(
    p_chats bigint[], p_epochs bigint[], p_row_chat int[],
    p_senders bigint[], p_cmids text[], p_texts text[], p_attachments text[]
) RETURNS TABLE (
    idx int, status text, members_version bigint,
    id bigint, chat_id bigint, seq bigint, sender_id bigint, client_msg_id text,
    text text, attachments jsonb, created_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    k int;
    v_chat bigint;
    v_last bigint;
    v_epoch bigint;
    v_version bigint;
    v_rows int[];
    v_stored messages[];
BEGIN
    FOR k IN 1 .. cardinality(p_chats) LOOP
        v_chat := p_chats[k];
        v_rows := ARRAY(SELECT i FROM generate_subscripts(p_row_chat, 1) AS i
                        WHERE p_row_chat[i] = k ORDER BY i);
        v_epoch := NULL;
        -- NO KEY UPDATE (not UPDATE): only non-key columns change, and it must not conflict with
        -- the KEY SHARE locks that foreign-key checks (cursors, messages) take on this row
        SELECT c.last_seq, c.epoch, c.members_version INTO v_last, v_epoch, v_version
        FROM chats c WHERE c.id = v_chat FOR NO KEY UPDATE;
        IF v_epoch IS NULL OR v_epoch <> p_epochs[k] THEN
            RETURN QUERY
            SELECT r, CASE WHEN v_epoch IS NULL THEN 'missing' ELSE 'fenced' END, 0::bigint,
                   NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::text,
                   NULL::text, NULL::jsonb, NULL::timestamptz
            FROM unnest(v_rows) AS r;
            CONTINUE;
        END IF;

        WITH stored AS (
            INSERT INTO messages AS m (chat_id, seq, sender_id, client_msg_id, text, attachments, epoch)
            SELECT v_chat, v_last + t.ord, p_senders[t.i], p_cmids[t.i], p_texts[t.i],
                   p_attachments[t.i]::jsonb, p_epochs[k]
            FROM unnest(v_rows) WITH ORDINALITY AS t(i, ord)
            WHERE EXISTS (SELECT 1 FROM chat_members cm
                          WHERE cm.chat_id = v_chat AND cm.user_id = p_senders[t.i])
            ON CONFLICT (sender_id, client_msg_id) DO NOTHING
            RETURNING m.*
        )
        SELECT array_agg(s ORDER BY s.seq) INTO v_stored FROM stored s;

        IF coalesce(cardinality(v_stored), 0) = cardinality(v_rows) THEN
            UPDATE chats c SET last_seq = v_last + cardinality(v_rows), last_activity_at = now()
            WHERE c.id = v_chat;
            RETURN QUERY
            SELECT v_rows[(s.seq - v_last)::int], 'created', v_version, s.id, s.chat_id, s.seq,
                   s.sender_id, s.client_msg_id, s.text, s.attachments, s.created_at
            FROM unnest(v_stored) AS s;
        ELSE
            DELETE FROM messages m WHERE m.chat_id = v_chat AND m.seq > v_last;
            RETURN QUERY
            SELECT v_rows[p.idx], p.status, p.members_version, p.id, p.chat_id, p.seq,
                   p.sender_id, p.client_msg_id, p.text, p.attachments, p.created_at
            FROM post_messages(
                v_chat, p_epochs[k],
                ARRAY(SELECT p_senders[i] FROM unnest(v_rows) AS i),
                ARRAY(SELECT p_cmids[i] FROM unnest(v_rows) AS i),
                ARRAY(SELECT p_texts[i] FROM unnest(v_rows) AS i),
                ARRAY(SELECT p_attachments[i] FROM unnest(v_rows) AS i)
            ) AS p;
        END IF;
    END LOOP;
END;
$$;
