-- PostgreSQL's version of 14_search.sql: the full-text index of searchable event text
-- (stores.search) as a tsvector with a GIN index, instead of SQLite's FTS5 table. One row per
-- searchable event, keyed by its stream_ordering as FTS5's rowid is. `value` keeps the text for
-- highlighting; `vector` holds the stemmed words of the accent-folded text (stores.search).
-- No backfill: a PostgreSQL database starts empty or is filled by `trioserver port-db`, which
-- rebuilds this table from the events it copies.
CREATE TABLE event_search (
    stream_ordering BIGINT PRIMARY KEY,
    value TEXT NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);

-- English stemming without stop words (FTS5's porter tokenizer drops no words, so "and" or
-- "the" are searchable there too); the snowball template without a StopWords file keeps them.
CREATE TEXT SEARCH DICTIONARY trioserver_english_stem (TEMPLATE = snowball, Language = english);
CREATE TEXT SEARCH CONFIGURATION trioserver_search (COPY = english);
ALTER TEXT SEARCH CONFIGURATION trioserver_search
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
    WITH trioserver_english_stem;
