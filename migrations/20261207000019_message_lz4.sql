-- The stored messages (`message`, migration 12) are compressed with lz4 like `data`, where the
-- server supports it: pglz showed in the applier's profile (#27). Only new values are affected.
DO $$
BEGIN
    ALTER TABLE users ALTER COLUMN message SET COMPRESSION lz4;
    ALTER TABLE organizations ALTER COLUMN message SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL: stored messages stay compressed with pglz';
END
$$;
