-- A canceled item whose period has ended is `ended` in the mirror, once, even before Clerk says
-- so (rows of source `clock`, type `clerkmirror.subscriptionItem.periodEnded`): `status` is then
-- the mirror's, `clerk_status` what Clerk last said.
ALTER TABLE subscription_items ADD COLUMN clerk_status text;
UPDATE subscription_items SET clerk_status = status;
CREATE INDEX subscription_items_canceled ON subscription_items (period_end) WHERE status = 'canceled';
