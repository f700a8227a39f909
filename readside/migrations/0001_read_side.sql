-- The Postgres query side. Rows are inserted, never updated: the archive is
-- append-only and read models are versioned by insert (latest version wins).

-- Every event of every *.events topic, as consumed. Partitioned by month on
-- the record's timestamp so old months can be detached or dropped whole.
-- recorded_at is part of the key because a partitioned table's unique index
-- must contain the partition key; a redelivered record carries the same
-- timestamp, so the key still identifies (topic, partition, offset).
-- No default partition: rows in it would block creating their month's
-- partition later. Month partitions (events_yYYYYmMM) are created by the
-- maintenance job.
CREATE TABLE events (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    recorded_at  timestamptz NOT NULL,
    message_type text        NOT NULL,
    message_id   uuid,
    key          text,
    payload      bytea       NOT NULL,
    headers      jsonb       NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset", recorded_at)
) PARTITION BY RANGE (recorded_at);

-- Products as the catalog published them, one row per version. `doc` is the
-- d2c.catalog.v1.Product encoding; the other columns exist to be searched.
CREATE TABLE product_versions (
    product_id   text        NOT NULL,
    version      bigint      NOT NULL,
    doc          bytea       NOT NULL,
    name         text        NOT NULL,
    description  text        NOT NULL,
    category     text        NOT NULL,
    archived     boolean     NOT NULL,
    skus         text[]      NOT NULL,
    -- currency → lowest variant price in minor units
    prices       jsonb       NOT NULL,
    search       tsvector    GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, name), 'A')
        || setweight(to_tsvector('english'::regconfig, category), 'B')
        || setweight(to_tsvector('english'::regconfig, description), 'C')
    ) STORED,
    projected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, version)
);

CREATE INDEX product_versions_search ON product_versions USING gin (search);
CREATE INDEX product_versions_skus ON product_versions USING gin (skus);
CREATE INDEX product_versions_category ON product_versions (category);

-- Orders, one row per event on orders.events. The version is the event's
-- offset: one order's events share a partition, so offsets order them.
CREATE TABLE order_versions (
    order_id     text        NOT NULL,
    version      bigint      NOT NULL,
    customer_id  text        NOT NULL,
    status       text        NOT NULL,
    placed_at_ms bigint      NOT NULL,
    doc          bytea       NOT NULL,
    projected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, version)
);

CREATE INDEX order_versions_by_customer
    ON order_versions (customer_id, placed_at_ms DESC, order_id);

-- Every run of a singleton job, by the replica that held the lock.
CREATE TABLE job_runs (
    id          bigserial   PRIMARY KEY,
    job         text        NOT NULL,
    runner      text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    detail      text        NOT NULL
);
