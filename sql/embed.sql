-- belink_embed: sentence embeddings as pgvector vectors (included by src/api/embed.rs).
CREATE FUNCTION belink_embed(text text) RETURNS vector
    LANGUAGE sql VOLATILE STRICT PARALLEL RESTRICTED
    RETURN belink_embed_real(text)::vector;
COMMENT ON FUNCTION belink_embed(text) IS 'Sentence embedding (L2-normalized) of a text, computed by the model server';

CREATE FUNCTION belink_embed(texts text[]) RETURNS SETOF vector
    LANGUAGE sql VOLATILE STRICT PARALLEL RESTRICTED
BEGIN ATOMIC
    SELECT e.embedding::vector FROM belink_embed_many_real(texts) AS e ORDER BY e.ordinality;
END;
COMMENT ON FUNCTION belink_embed(text[]) IS 'Sentence embeddings of many texts, in order, computed in one request (NULL for NULL texts)';
