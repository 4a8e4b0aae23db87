-- portal_sessions: the owner portal's sessions (issue 15). An application's
-- backend creates one with the operator token for one owner and a lifetime;
-- the browser exchanges its one-time code for a session cookie. Only SHA-256
-- hashes of the code and of the session secret are kept: neither can be
-- recovered from the table.
CREATE TABLE relay.portal_sessions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner           text NOT NULL CONSTRAINT "portal session owner must not be empty" CHECK (btrim(owner) <> ''),
    -- who asked for it: the API caller ("operator") and its address, and the
    -- application's own name for its user (free label, may be empty).
    created_by      text NOT NULL,
    client_addr     text NOT NULL DEFAULT '',
    app_user        text NOT NULL DEFAULT '',
    return_url      text,
    code_hash       bytea NOT NULL UNIQUE,
    session_hash    bytea UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    code_expires_at timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    exchanged_at    timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    CONSTRAINT "portal session must expire after it is created" CHECK (expires_at > created_at),
    CONSTRAINT "portal code must expire with its session at the latest" CHECK (code_expires_at <= expires_at),
    CONSTRAINT "portal session secret is set when the code is exchanged" CHECK ((session_hash IS NULL) = (exchanged_at IS NULL))
);

-- The creation rate limit counts an owner's recent sessions; pruning reads
-- expires_at.
CREATE INDEX portal_sessions_owner_created_at ON relay.portal_sessions (owner, created_at);
CREATE INDEX portal_sessions_expires_at ON relay.portal_sessions (expires_at);
