-- Planner estimates for the linking functions (included by src/api/link.rs, last). Each call
-- costs milliseconds (catalog look-ups, often a model-server round trip): with a high cost the
-- planner evaluates them after every cheaper condition, on as few rows as it can.
ALTER FUNCTION belink_candidates(text, text, integer) COST 10000 ROWS 10;
ALTER FUNCTION belink_normalize(text, text, text, integer) COST 10000 ROWS 1;
ALTER FUNCTION belink_normalize(text[], text[], text, integer) COST 100000 ROWS 100;
ALTER FUNCTION belink_link(text, text) COST 10000;
ALTER FUNCTION belink_link(text[], text) COST 100000 ROWS 100;
ALTER FUNCTION belink_entities(text, text) COST 10000 ROWS 10;
