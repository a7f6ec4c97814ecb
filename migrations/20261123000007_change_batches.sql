-- Applier batches in the change log: each change carries the seq of the last change its batch
-- (one applier transaction) appended, so readers hand out whole batches and a page read from
-- the log never cuts one. NULL (changes appended before this column existed, or written by
-- hand): the change is a batch of its own, as every reader treated it before.
ALTER TABLE changes ADD COLUMN batch_last bigint;
