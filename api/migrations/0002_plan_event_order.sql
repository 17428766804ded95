-- Provider events can arrive (or be replayed) out of order: remember the creation time of the
-- event that set each account's plan, and never let an older event overwrite a newer one.
ALTER TABLE accounts ADD COLUMN plan_event_created BIGINT;
