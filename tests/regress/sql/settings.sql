-- Every belink setting, its type, unit and choices; the prefix is reserved.
SELECT name, setting, unit, vartype, enumvals, context FROM pg_settings WHERE name LIKE 'belink.%' ORDER BY name;

-- Fixed choices are enums: a wrong value is refused with the valid ones.
SET belink.retrieval = 'lexical';
SHOW belink.retrieval;
SELECT error_of($$SET belink.retrieval = 'semantic'$$);
SET belink.rerank_mode = 'generate';
SHOW belink.rerank_mode;
SELECT error_of($$SET belink.rerank_mode = 'sample'$$);
RESET belink.rerank_mode;
RESET belink.retrieval;

-- Times take units.
SET belink.request_timeout = '2s';
SHOW belink.request_timeout;
SELECT error_of($$SET belink.request_timeout = '50ms'$$);
RESET belink.request_timeout;

-- A mistyped belink setting is an error, not a silent placeholder.
SELECT error_of($$SET belink.rerankk = on$$);
SELECT error_of($$SET belink.no_such_setting = 1$$);
SELECT error_of($$SELECT set_config('belink.typo', 'x', false)$$);

-- Settings that are resource limits or load models belong to superusers and the roles granted
-- SET on them.
CREATE ROLE belink_plain;
SET ROLE belink_plain;
SELECT error_of($$SET belink.rerank = on$$);
SELECT error_of($$SET belink.max_document_chars = 2000000000$$);
SELECT error_of($$SET belink.max_dictionary_mb = -1$$);
SET belink.top_k = 5;
RESET ROLE;
GRANT SET ON PARAMETER belink.rerank TO belink_plain;
SET ROLE belink_plain;
SELECT error_of($$SET belink.rerank = on$$);
RESET belink.rerank;
RESET ROLE;
REVOKE SET ON PARAMETER belink.rerank FROM belink_plain;
DROP ROLE belink_plain;
