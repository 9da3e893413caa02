-- Web Push subscriptions: a browser's PushSubscription (endpoint and its keys) per user.
-- An endpoint names one browser profile's subscription: it belongs to one user at a time (the
-- user who subscribed it last), so a shared browser never shows one person another's pushes.

CREATE TABLE push_subscriptions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    endpoint   text NOT NULL UNIQUE,
    -- URL-safe base64 without padding, as the browser gives them (validated by the node)
    p256dh     text NOT NULL,
    auth       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id, id);
