-- The W3C trace context (`traceparent`) of the webhook an inbox row and its changes came from,
-- kept when the server exports traces (#29): the applier's batch span links to it and the hub's
-- fan-out span of each change continues its trace. NULL otherwise (and for backfill, reconcile,
-- replay and rows written before this). Nullable without a default: adding it rewrites nothing.
ALTER TABLE inbox ADD COLUMN trace_context text;
ALTER TABLE changes ADD COLUMN trace_context text;
