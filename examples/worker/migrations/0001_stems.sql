-- Predictions, their stems and the webhook deliveries seen, as the Worker in src/worker.ts keeps them.

-- One row per prediction, created by its first webhook. status only moves forward:
-- starting (rank 0) < processing (1) < succeeded, failed, canceled, aborted (2, final).
CREATE TABLE predictions (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    status_rank INTEGER NOT NULL,
    error TEXT,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- One row per stem and prediction, written by the first event that lists the file and never changed after.
-- The figures come from that event's metrics.stems; NULL where the event had none for the stem.
CREATE TABLE stems (
    prediction_id TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    present INTEGER,
    peak_dbfs REAL,
    loudness_lufs REAL,
    active_fraction REAL,
    received_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (prediction_id, name)
);

-- Every webhook-id recorded once: a retried delivery is acknowledged as a duplicate.
CREATE TABLE webhook_deliveries (
    webhook_id TEXT PRIMARY KEY,
    prediction_id TEXT NOT NULL,
    status TEXT NOT NULL,
    received_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
