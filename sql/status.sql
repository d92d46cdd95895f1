-- belink_worker_status: the model server's state as one row (included by src/api/status.rs).
CREATE FUNCTION belink_worker_status(
    OUT state text, OUT server_pid integer, OUT server_starts integer, OUT device text,
    OUT encoder_model text, OUT encoder_state text, OUT encoder_dim integer,
    OUT requests bigint, OUT texts bigint, OUT abandoned_requests bigint, OUT batches bigint,
    OUT mean_requests_per_batch double precision, OUT max_requests_per_batch integer,
    OUT max_texts_per_batch integer, OUT mean_latency_ms double precision,
    OUT max_latency_ms double precision, OUT queue_depth integer, OUT errors bigint,
    OUT last_error text, OUT rss_mb double precision, OUT peak_rss_mb double precision,
    OUT uptime_s double precision)
    LANGUAGE sql VOLATILE PARALLEL RESTRICTED
BEGIN ATOMIC
    SELECT s->>'state', (s->>'server_pid')::integer, (s->>'server_starts')::integer, s->>'device',
           s->>'encoder_model', s->>'encoder_state', (s->>'encoder_dim')::integer,
           (s->>'requests')::bigint, (s->>'texts')::bigint, (s->>'abandoned_requests')::bigint,
           (s->>'batches')::bigint, (s->>'mean_requests_per_batch')::double precision,
           (s->>'max_requests_per_batch')::integer, (s->>'max_texts_per_batch')::integer,
           (s->>'mean_latency_ms')::double precision, (s->>'max_latency_ms')::double precision,
           (s->>'queue_depth')::integer, (s->>'errors')::bigint, s->>'last_error',
           (s->>'rss_kb')::double precision / 1024, (s->>'peak_rss_kb')::double precision / 1024,
           (s->>'uptime_s')::double precision
    FROM belink_worker_status_json() AS s;
END;
COMMENT ON FUNCTION belink_worker_status() IS 'State of the belink model server and its supervisor, one row';
