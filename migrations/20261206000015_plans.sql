-- Clerk Billing's plans, as the Backend API lists them (Clerk sends no plan webhooks: the
-- mirror's own rows, source `api`, type `clerkmirror.plan.listed`, write them). Nothing deletes a plan.
ALTER TABLE changes DROP CONSTRAINT changes_entity_type_check;
ALTER TABLE changes ADD CONSTRAINT changes_entity_type_check
    CHECK (entity_type IN ('user', 'organization', 'membership', 'role', 'permission', 'domain', 'invitation',
                           'subscription_item', 'subscription', 'plan'));

CREATE TABLE plans (
    id                        text PRIMARY KEY,
    slug                      text,
    display_name              text,
    description               text,
    -- `user` or `organization`.
    payer_type                text,
    -- Feature slugs, in Clerk's order.
    features                  text[] NOT NULL DEFAULT '{}',
    is_default                boolean NOT NULL DEFAULT false,
    is_recurring              boolean NOT NULL DEFAULT false,
    publicly_visible          boolean NOT NULL DEFAULT false,
    -- Money in minor units of `currency`.
    fee_amount                bigint,
    annual_fee_amount         bigint,
    annual_monthly_fee_amount bigint,
    currency                  text,
    free_trial_days           bigint,
    deleted_at                timestamptz,
    data                      jsonb,
    version_updated_ms        bigint,
    version_event_ms          bigint,
    version_key               text,
    update_cursor             bigint NOT NULL
);
CREATE INDEX plans_slug ON plans (slug, id);

-- An item's plan as a resource name and its payer's type, for filters (`plan = "plans/…"`,
-- `payer_type = "organization"`).
ALTER TABLE subscription_items ADD COLUMN plan text, ADD COLUMN payer_type text;
UPDATE subscription_items SET plan = 'plans/' || plan_id WHERE plan_id IS NOT NULL;
UPDATE subscription_items SET payer_type = CASE WHEN payer_organization_id IS NOT NULL THEN 'organization'
                                                WHEN payer_user_id IS NOT NULL THEN 'user' END;
CREATE INDEX subscription_items_plan ON subscription_items (plan, id);
