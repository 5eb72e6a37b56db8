-- Each farm's committed mark: the highest seq up to which every reading of the farm is stored (or was dropped
-- by the farm itself), moved in the transaction that stores the readings (discovery/postgres/history.py) by
-- whichever node stores them, and only ever raised. The discovery node publishes it to the farm, which keeps
-- every reading until a mark covers it.
CREATE TABLE committed (
    farm_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
