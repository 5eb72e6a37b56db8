-- The alerting's state (discovery/alerting/store.py), shared by every node: the same columns as alerts.db.
-- One alert not yet cleared per farm and condition, whichever node opened it first (alerts_unresolved): the
-- node that opened it too takes that row's id (AlertEngine.merge).

CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    farm_id TEXT NOT NULL,
    key TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    subject TEXT NOT NULL,
    since TEXT NOT NULL,
    opened TEXT NOT NULL,
    state TEXT NOT NULL,
    value DOUBLE PRECISION,
    limit_text TEXT,
    unit TEXT,
    latching INTEGER NOT NULL,
    tier INTEGER NOT NULL,
    notified TEXT,
    acknowledged_by TEXT,
    acknowledged TEXT,
    cleared TEXT
);
CREATE INDEX alerts_farm ON alerts (farm_id, opened);
CREATE INDEX alerts_state ON alerts (state);
CREATE UNIQUE INDEX alerts_unresolved ON alerts (farm_id, key) WHERE state <> 'cleared';

CREATE TABLE steps (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts TEXT NOT NULL,
    farm_id TEXT,
    alert_ids TEXT NOT NULL,
    step TEXT NOT NULL,
    username TEXT,
    channel TEXT,
    delivered INTEGER,
    error TEXT
);
CREATE INDEX steps_farm ON steps (farm_id, seq);
CREATE INDEX steps_ts ON steps (ts);

CREATE TABLE told (
    alert_id TEXT NOT NULL,
    username TEXT NOT NULL,
    PRIMARY KEY (alert_id, username)
);

CREATE TABLE recipients (
    username TEXT PRIMARY KEY,
    language TEXT NOT NULL DEFAULT 'ru',
    quiet_start TEXT,
    quiet_end TEXT,
    timezone TEXT
);

CREATE TABLE channels (
    username TEXT NOT NULL,
    url TEXT NOT NULL,
    severity TEXT NOT NULL,
    tier INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_attempt TEXT,
    last_ok TEXT,
    PRIMARY KEY (username, url)
);

-- "farms" is the registry's table on this server: the farms the alerting heard of have a name of their own
CREATE TABLE alert_farms (
    farm_id TEXT PRIMARY KEY,
    name TEXT,
    owner TEXT,
    last_heard TEXT
);
