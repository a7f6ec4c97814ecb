-- Users and organizations also keep the protobuf message a read sends (`message`), encoded by
-- the applier when it writes the row, so a read that memory cannot answer sends those bytes
-- instead of turning `data` into a message on every call. `message_format` names the encoding
-- (`store::MESSAGE_FORMAT`): a server reads `message` only in its own format, and otherwise
-- (rows written before this migration, or by another version) converts `data` as before.
-- `data` stays the source of truth.

ALTER TABLE users ADD COLUMN message bytea, ADD COLUMN message_format integer;
ALTER TABLE organizations ADD COLUMN message bytea, ADD COLUMN message_format integer;
