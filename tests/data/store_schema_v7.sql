-- The store's schema at version 7 (the release before limit reservations), as that release created it: in
-- SQLite's spelling (PostgreSQL received it translated by the dialect layer, followed by the PostgreSQL-only
-- part at the end). tests/test_store_migrations.py builds a version 7 store from it and migrates it.
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS applications (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    group_id INTEGER NOT NULL REFERENCES groups(id),
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    slot INTEGER NOT NULL CHECK (slot IN (1, 2)),
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, slot)
);
CREATE TABLE IF NOT EXISTS limits (
    limit_id TEXT NOT NULL,
    application_id INTEGER NOT NULL REFERENCES applications(id),
    limit_name TEXT NOT NULL,
    max REAL NOT NULL,
    limit_type TEXT NOT NULL DEFAULT 'allow',
    threshold REAL NOT NULL DEFAULT 1.0,
    properties TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    cost_input REAL NOT NULL DEFAULT 0,
    cost_output REAL NOT NULL DEFAULT 0,
    cost_total REAL NOT NULL DEFAULT 0,  -- spend since the last reset
    req_ok INTEGER NOT NULL DEFAULT 0,  -- requests since the last reset, by state
    req_exceeded INTEGER NOT NULL DEFAULT 0,
    req_overrun INTEGER NOT NULL DEFAULT 0,
    req_blocked INTEGER NOT NULL DEFAULT 0,
    req_blocked_external INTEGER NOT NULL DEFAULT 0,
    req_failed INTEGER NOT NULL DEFAULT 0,
    req_total INTEGER NOT NULL DEFAULT 0,
    reset_schedule TEXT,             -- daily | weekly | monthly | ISO 8601 duration; NULL: none
    schedule_anchor_ms INTEGER,      -- start of the first period of a duration schedule
    next_reset_ms INTEGER,           -- when the next scheduled reset is due
    alerted INTEGER NOT NULL DEFAULT 0,  -- alerts raised since the last reset: bit 1 threshold, bit 2 max
    PRIMARY KEY (application_id, limit_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS limits_name ON limits (application_id, limit_name);
CREATE TABLE IF NOT EXISTS limit_history (
    id INTEGER PRIMARY KEY,
    application_id INTEGER NOT NULL,
    limit_id TEXT NOT NULL,
    limit_name TEXT NOT NULL,
    limit_type TEXT NOT NULL,
    max REAL NOT NULL,
    reset_ms INTEGER NOT NULL,       -- when the reset took effect (resetDate, the scheduled boundary, or now)
    trigger TEXT NOT NULL,           -- manual | schedule
    totals TEXT NOT NULL             -- JSON TotalCostData at the reset
);
CREATE INDEX IF NOT EXISTS limit_history_limit ON limit_history (application_id, limit_id, reset_ms);
CREATE TABLE IF NOT EXISTS limit_alerts (
    id INTEGER PRIMARY KEY,
    application_id INTEGER NOT NULL,
    limit_id TEXT NOT NULL,
    kind TEXT NOT NULL,              -- threshold | max
    payload TEXT NOT NULL,           -- JSON body of the webhook
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    done_ms INTEGER,                 -- delivered, or given up (see outcome)
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS limit_alerts_pending ON limit_alerts (next_attempt_ms) WHERE done_ms IS NULL;
CREATE TABLE IF NOT EXISTS use_case_definitions (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    description TEXT,                -- NULL for a definition created on first sight by ingest
    created_ms INTEGER NOT NULL,
    logging_enabled INTEGER,         -- NULL: not set (logging on)
    limit_config TEXT,               -- JSON {max, limit_type, threshold, properties}: a limit per new instance
    updated_ms INTEGER,
    PRIMARY KEY (application_id, name)
);
CREATE TABLE IF NOT EXISTS use_case_instances (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    use_case_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    properties TEXT,                 -- JSON; NULL when none
    created_ms INTEGER NOT NULL,
    limit_id TEXT,                   -- the limit the definition's limit_config created for this instance
    PRIMARY KEY (application_id, use_case_id)
) WITHOUT ROWID;                     -- one b-tree, not a table plus its key index: most events create an instance
CREATE TABLE IF NOT EXISTS kpis (
    application_id INTEGER NOT NULL,
    use_case_name TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    kpi_type TEXT NOT NULL,          -- boolean | number | percentage | likert5 | likert7 | likert10
    goal REAL NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, use_case_name, name)
);
CREATE TABLE IF NOT EXISTS kpi_scores (
    application_id INTEGER NOT NULL,
    use_case_id TEXT NOT NULL,
    kpi_name TEXT NOT NULL,
    score REAL NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, use_case_id, kpi_name)
);
CREATE TABLE IF NOT EXISTS resource_versions (
    resource_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,            -- genai-prices | custom
    category TEXT,
    resource TEXT,
    provider TEXT,
    model TEXT,
    prices TEXT NOT NULL,            -- human-readable (genai-prices) or JSON units (custom)
    start_ms INTEGER,
    end_ms INTEGER
);
CREATE TABLE IF NOT EXISTS custom_resources (
    resource_id TEXT PRIMARY KEY,    -- one version of a custom resource (organization-wide, like Pay-i's)
    category TEXT NOT NULL,
    resource TEXT NOT NULL,
    scope TEXT,                      -- the resource scope it prices (global, datazone, region...); NULL: any
    units TEXT NOT NULL,             -- JSON {unit: {input_price, output_price}} in USD per unit
    max_input_units INTEGER,
    max_output_units INTEGER,
    max_total_units INTEGER,
    start_ms INTEGER NOT NULL,       -- in force from here until the next version's start
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS custom_resources_by_name ON custom_resources (category, resource, start_ms);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    application_id INTEGER NOT NULL REFERENCES applications(id),
    event_ms INTEGER NOT NULL,
    ingest_ms INTEGER NOT NULL,
    category TEXT NOT NULL,
    resource TEXT,
    resource_id TEXT,
    provider_response_id TEXT,
    dedupe_id TEXT,
    use_case_name TEXT,
    use_case_id TEXT,
    use_case_version INTEGER,
    use_case_step TEXT,
    user_id TEXT,
    account_name TEXT,
    resource_scope TEXT,
    http_status_code INTEGER,
    failed INTEGER NOT NULL DEFAULT 0,
    latency_ms INTEGER,
    ttft_ms INTEGER,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    units TEXT NOT NULL,
    cost_input REAL,                 -- NULL when the event could not be priced
    cost_output REAL,
    cost_total REAL,
    unpriced_reason TEXT,
    limit_states TEXT,               -- JSON {limit_id: state}; NULL when the request names no limit
    properties TEXT,
    provider_data TEXT,              -- provider_* fields; NULL when logging was disabled
    unknown_units TEXT,              -- JSON {unit: {input, output}} the price had no rate for; NULL when none
    request_tags TEXT                -- JSON array; NULL when none
);
CREATE UNIQUE INDEX IF NOT EXISTS requests_provider_id
    ON requests (application_id, category, provider_response_id) WHERE provider_response_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS requests_dedupe_id
    ON requests (application_id, dedupe_id) WHERE dedupe_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_event_time ON requests (event_ms);
-- GenAI spans received over OTLP, kept for a while to recognise a second span of the same call
-- (see payi_otel.service.otlp); rows older than the window are pruned.
CREATE TABLE IF NOT EXISTS otlp_spans (
    application_id INTEGER NOT NULL,
    trace_id TEXT NOT NULL,          -- 32 hex digits
    span_id TEXT NOT NULL,           -- 16 hex digits
    parent_span_id TEXT,
    request_id TEXT NOT NULL,        -- the stored request the span's call became
    call_key TEXT NOT NULL,          -- category and model: spans of one call share it
    rank INTEGER NOT NULL,           -- which span's event the request holds (the highest)
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS otlp_spans_parent ON otlp_spans (application_id, trace_id, parent_span_id);
CREATE INDEX IF NOT EXISTS otlp_spans_seen ON otlp_spans (seen_ms);
-- PostgreSQL only
CREATE TABLE IF NOT EXISTS cache_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO cache_generation VALUES (1, 0) ON CONFLICT DO NOTHING;
