-- The business report reads settled checkouts by when they reached the
-- read side, and their archived order events by type and record time (the
-- checkout latency), without scanning whole tables.
CREATE INDEX order_versions_settled_by_projection
    ON order_versions (projected_at)
    WHERE status IN ('confirmed', 'rejected');

CREATE INDEX events_by_type_and_time ON events (message_type, recorded_at);
