-- Clerk Billing's subscriptions (`subscription.*`, whose events also carry the items above).
ALTER TABLE changes DROP CONSTRAINT changes_entity_type_check;
ALTER TABLE changes ADD CONSTRAINT changes_entity_type_check
    CHECK (entity_type IN ('user', 'organization', 'membership', 'role', 'permission', 'domain', 'invitation',
                           'subscription_item', 'subscription'));

CREATE TABLE subscriptions (
    id                    text PRIMARY KEY,
    payer                 text,
    payer_organization_id text,
    payer_user_id         text,
    status                text,
    active_at             timestamptz,
    canceled_at           timestamptz,
    ended_at              timestamptz,
    past_due_at           timestamptz,
    created_at            timestamptz,
    updated_at            timestamptz,
    deleted_at            timestamptz,
    data                  jsonb,
    version_updated_ms    bigint,
    version_event_ms      bigint,
    version_key           text,
    update_cursor         bigint NOT NULL
);
CREATE INDEX subscriptions_payer ON subscriptions (payer, id);
CREATE INDEX subscriptions_organization ON subscriptions (payer_organization_id, id);
CREATE INDEX subscriptions_user ON subscriptions (payer_user_id, id);
