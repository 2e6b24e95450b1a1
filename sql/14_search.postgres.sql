-- PostgreSQL's version of 14_search.sql: the full-text index of searchable event text
-- (stores.search) as a tsvector with a GIN index, instead of SQLite's FTS5 table. One row per
-- searchable event, keyed by its stream_ordering as FTS5's rowid is. `value` keeps the text for
-- highlighting; `vector` is the stemmed, accent-folded words ('simple' dictionary folded by
-- unaccent would need an extension; the 'english' configuration stems as FTS5's porter does).
-- No backfill: a PostgreSQL database starts empty or is filled by `trioserver port-db`, which
-- rebuilds this table from the events it copies.
CREATE TABLE event_search (
    stream_ordering BIGINT PRIMARY KEY,
    value TEXT NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
