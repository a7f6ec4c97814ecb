-- Clerk Billing's payment attempts (`paymentAttempt.*`), and the payment a subscription's latest
-- attempts are at: a subscription shows the status of that payment's newest attempt.
ALTER TABLE changes DROP CONSTRAINT changes_entity_type_check;
ALTER TABLE changes ADD CONSTRAINT changes_entity_type_check
    CHECK (entity_type IN ('user', 'organization', 'membership', 'role', 'permission', 'domain', 'invitation',
                           'subscription_item', 'subscription', 'plan', 'payment_attempt'));

CREATE TABLE payment_attempts (
    id                    text PRIMARY KEY,
    payment_id            text,
    payer                 text,
    payer_organization_id text,
    payer_user_id         text,
    -- Clerk's status as sent (values Clerk adds later included).
    status                text,
    charge_type           text,
    -- The grand total, in minor units of `currency`.
    amount                bigint,
    currency              text,
    failed_reason         text,
    paid_at               timestamptz,
    failed_at             timestamptz,
    billing_date          timestamptz,
    created_at            timestamptz,
    updated_at            timestamptz,
    deleted_at            timestamptz,
    data                  jsonb,
    version_updated_ms    bigint,
    version_event_ms      bigint,
    version_key           text,
    update_cursor         bigint NOT NULL
);
CREATE INDEX payment_attempts_payment ON payment_attempts (payment_id, updated_at);
CREATE INDEX payment_attempts_organization ON payment_attempts (payer_organization_id, id);
CREATE INDEX payment_attempts_user ON payment_attempts (payer_user_id, id);

ALTER TABLE subscriptions ADD COLUMN latest_payment_id text;
UPDATE subscriptions SET latest_payment_id = data->>'latest_payment_id'
 WHERE data->>'latest_payment_id' IS NOT NULL AND data->>'latest_payment_id' <> '';
