-- Large values (raw webhook bodies, entity JSON, change states) are compressed with lz4 where
-- the server supports it: pglz, the default, took a visible share of the applier's and of
-- ingest's time in `bench` profiles. Only new values are affected; servers built without lz4
-- keep pglz.
DO $$
BEGIN
    ALTER TABLE inbox ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE users ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE organizations ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE memberships ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE changes ALTER COLUMN state SET COMPRESSION lz4;
    ALTER TABLE changes ALTER COLUMN previous SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL: large values stay compressed with pglz';
END
$$;
