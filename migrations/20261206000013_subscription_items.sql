-- Clerk Billing's subscription items (Clerk's `subscriptionItem.*` events). No event deletes
-- one: the default plan's item keeps its id and cycles ended → upcoming → active, so the
-- newest `updated_at` wins; `deleted_at` stays empty unless a repair says otherwise.

ALTER TABLE changes DROP CONSTRAINT changes_entity_type_check;
ALTER TABLE changes ADD CONSTRAINT changes_entity_type_check
    CHECK (entity_type IN ('user', 'organization', 'membership', 'role', 'permission', 'domain', 'invitation',
                           'subscription_item'));

CREATE TABLE subscription_items (
    id                    text PRIMARY KEY,
    subscription_id       text,
    -- `organizations/{id}` or `users/{id}`: who pays.
    payer                 text,
    payer_organization_id text,
    payer_user_id         text,
    plan_id               text,
    plan_slug             text,
    -- Clerk's status as sent (values Clerk adds later included).
    status                text,
    is_free_trial         boolean NOT NULL DEFAULT false,
    period_start          timestamptz,
    period_end            timestamptz,
    interval              text,
    seats                 bigint,
    created_at            timestamptz,
    updated_at            timestamptz,
    deleted_at            timestamptz,
    data                  jsonb,
    version_updated_ms    bigint,
    version_event_ms      bigint,
    version_key           text,
    update_cursor         bigint NOT NULL
);
CREATE INDEX subscription_items_payer ON subscription_items (payer, id);
CREATE INDEX subscription_items_organization ON subscription_items (payer_organization_id, id);
CREATE INDEX subscription_items_user ON subscription_items (payer_user_id, id);
