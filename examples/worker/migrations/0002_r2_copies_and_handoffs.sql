-- Copies of the stems in R2, stems.json's figures, the transcription hand-off, and the body of each delivery.

-- The model and its terms next to the figures; figures_from says where the figures came from: 'metrics'
-- (the webhook's metrics.stems) or 'stems.json'. NULL while they are unknown; once known they stay.
ALTER TABLE stems ADD COLUMN model TEXT;
ALTER TABLE stems ADD COLUMN terms TEXT;
ALTER TABLE stems ADD COLUMN figures_from TEXT;

-- The copy into R2, from Replicate's URL before it deletes the file.
-- copy_state: pending (recorded, not yet queued), queued, copied, copy_failed (copy_error says why) or
-- not_copied (the figures say present: false, so there is nothing to copy).
ALTER TABLE stems ADD COLUMN copy_state TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE stems ADD COLUMN copy_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stems ADD COLUMN copy_error TEXT;
ALTER TABLE stems ADD COLUMN r2_key TEXT;
ALTER TABLE stems ADD COLUMN size_bytes INTEGER;
ALTER TABLE stems ADD COLUMN content_type TEXT;
ALTER TABLE stems ADD COLUMN copied_at TEXT;

-- The transcription hand-off of the one stem FretWise transcribes.
-- handoff_state: NULL (not decided yet, or not the transcription stem), queued, done, handoff_failed
-- (handoff_error says why), or skipped (handoff_error says why: absent, or terms not accepted).
ALTER TABLE stems ADD COLUMN handoff_state TEXT;
ALTER TABLE stems ADD COLUMN handoff_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stems ADD COLUMN handoff_error TEXT;
ALTER TABLE stems ADD COLUMN handed_off_at TEXT;

-- transcribe_stem: from the first event with an input (NULL: none seen, the guitar is assumed).
-- files_since_ms: the earliest time known for the prediction (created_at, or a webhook's timestamp), from
-- which the copy deadline runs.
-- figures_url: stems.json's URL once an event lists it; figures_state: NULL (none listed), pending, queued,
-- read, or failed (figures_error says why).
ALTER TABLE predictions ADD COLUMN transcribe_stem TEXT;
ALTER TABLE predictions ADD COLUMN files_since_ms INTEGER;
ALTER TABLE predictions ADD COLUMN figures_url TEXT;
ALTER TABLE predictions ADD COLUMN figures_state TEXT;
ALTER TABLE predictions ADD COLUMN figures_error TEXT;

-- The SHA-256 of each delivery's body: a webhook-id seen with another body is refused (409), never applied.
ALTER TABLE webhook_deliveries ADD COLUMN body_sha256 TEXT;
