-- The extension, a small ontology every other file uses, and error_of: the SQLSTATE, message
-- and hint of the error a statement raises, so that the files show all three.
CREATE EXTENSION belink CASCADE;
CREATE FUNCTION error_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text;
    message text;
    hint text;
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN state || ': ' || message || coalesce(nullif(E'\nHINT: ' || hint, E'\nHINT: '), '');
END $$;
SELECT * FROM belink_load_ontology_text('mini', $obo$
format-version: 1.2
ontology: mini

[Term]
id: MINI:0001
name: Familial adenomatous polyposis
def: "An inherited condition with hundreds of colorectal adenomas." []
synonym: "Adenomatous polyposis coli" EXACT []
synonym: "FAP" EXACT ABBREVIATION []

[Term]
id: MINI:0002
name: Colorectal cancer
synonym: "Colon cancer" EXACT []
synonym: "Cancer of the colon" RELATED []

[Term]
id: MINI:0003
name: Seizure
synonym: "Seizures" EXACT []
synonym: "Epileptic seizure" RELATED []

[Term]
id: MINI:0004
name: Febrile seizure
synonym: "Fever fit" NARROW []

[Term]
id: MINI:0005
name: Hypertension
synonym: "High blood pressure" EXACT []

[Term]
id: MINI:0006
name: Familial amyloid polyneuropathy
synonym: "FAP" EXACT []

[Term]
id: MINI:0007
name: Old name
is_obsolete: true
$obo$, 'obo');
