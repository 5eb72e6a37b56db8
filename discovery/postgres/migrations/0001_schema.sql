-- The discovery node's tables: the same columns as its SQLite files, so that one SQL serves both,
-- except the history, which is partitioned by time here (discovery/postgres/history.py).

CREATE TABLE farms (
    farm_id TEXT PRIMARY KEY,
    name TEXT,
    owner_id TEXT,
    location TEXT,
    online INTEGER NOT NULL DEFAULT 0,
    status_ts TEXT,
    status_reason TEXT,
    last_seen TEXT,
    meta TEXT,
    heartbeat TEXT,
    state TEXT,
    alarms TEXT
);
CREATE INDEX farms_owner ON farms (owner_id);

CREATE TABLE commands (
    farm_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT,
    sent_ts TEXT,
    ack_ts TEXT,
    ok INTEGER,
    error TEXT,
    PRIMARY KEY (farm_id, id)
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hostname TEXT NOT NULL,
    farm_id TEXT,
    online INTEGER,
    record TEXT NOT NULL
);
CREATE TABLE sync (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    synced_at TEXT,
    source TEXT,
    tailnet TEXT
);

-- Raw readings, one partition a day (UTC), created as readings arrive; retention folds then drops them.
-- A partitioned table's unique key must hold its partition key: (farm, seq, ts) stores a reading received
-- twice (live and replayed, or by two nodes) once, as its time travels with it.
CREATE TABLE readings (
    farm_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,  -- seconds since the epoch, as in SQLite
    data JSONB NOT NULL,
    PRIMARY KEY (farm_id, seq, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX readings_ts ON readings (farm_id, ts);
-- readings of a time with no partition of its own (far past or future: a wrong clock, hostile input)
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

-- Downsampled min/max/avg per value and rollup step, one partition a week.
CREATE TABLE rollups (
    farm_id TEXT NOT NULL,
    name TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    min DOUBLE PRECISION,
    max DOUBLE PRECISION,
    avg DOUBLE PRECISION,
    count BIGINT NOT NULL,
    PRIMARY KEY (farm_id, name, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE rollups_default PARTITION OF rollups DEFAULT;
