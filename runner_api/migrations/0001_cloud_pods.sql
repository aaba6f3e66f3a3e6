-- Cloud Pods: subscriptions, the provisioning queue, its events, API tokens.
-- Applied by `cloudpods migrate` (recorded in cloud_pod_schema_migrations).

CREATE TABLE cloud_pod_subscriptions (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id      text NOT NULL,
    customer_email   text NOT NULL,
    plan_code        text NOT NULL,
    domain           text,
    hostname         text NOT NULL UNIQUE,
    status           text NOT NULL DEFAULT 'PROVISIONING'
                     CHECK (status IN ('PROVISIONING', 'ACTIVE', 'FAILED', 'SUSPENDED', 'TERMINATED')),
    vmid             integer,
    node             text,
    ip               inet,
    last_error       text,
    idempotency_key  text,
    request_digest   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    activated_at     timestamptz
);
CREATE INDEX cloud_pod_subscriptions_customer ON cloud_pod_subscriptions (customer_id, created_at);
-- A repeated order (same customer, same Idempotency-Key) is one order.
CREATE UNIQUE INDEX cloud_pod_subscriptions_idempotency
    ON cloud_pod_subscriptions (customer_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- A domain belongs to at most one live pod (FAILED and TERMINATED pods release it).
CREATE UNIQUE INDEX cloud_pod_subscriptions_live_domain
    ON cloud_pod_subscriptions (lower(domain))
    WHERE domain IS NOT NULL AND status IN ('PROVISIONING', 'ACTIVE', 'SUSPENDED');

CREATE TABLE cloud_pod_provisioning_tasks (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id  uuid NOT NULL REFERENCES cloud_pod_subscriptions (id),
    task_type        text NOT NULL
                     CHECK (task_type IN ('CREATE_CONTAINER', 'RESTART', 'SUSPEND', 'RESUME', 'TERMINATE')),
    status           text NOT NULL DEFAULT 'PENDING'
                     CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED')),
    worker_id        text,
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_at           timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    last_error       text,
    idempotency_key  text,
    result           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- One operation per pod at a time: at most one unfinished task per subscription.
CREATE UNIQUE INDEX cloud_pod_provisioning_tasks_one_open
    ON cloud_pod_provisioning_tasks (subscription_id) WHERE status IN ('PENDING', 'RUNNING');
-- What the claim query scans.
CREATE INDEX cloud_pod_provisioning_tasks_claimable
    ON cloud_pod_provisioning_tasks (run_at, id) WHERE status IN ('PENDING', 'RUNNING');
CREATE INDEX cloud_pod_provisioning_tasks_subscription ON cloud_pod_provisioning_tasks (subscription_id, id);

CREATE TABLE cloud_pod_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id          bigint NOT NULL REFERENCES cloud_pod_provisioning_tasks (id),
    subscription_id  uuid NOT NULL REFERENCES cloud_pod_subscriptions (id),
    attempt          integer NOT NULL,
    worker_id        text,
    step             text NOT NULL,
    host             text,
    status           text NOT NULL,
    duration_ms      integer,
    message          text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cloud_pod_events_task ON cloud_pod_events (task_id, id);
CREATE INDEX cloud_pod_events_subscription ON cloud_pod_events (subscription_id, id);

CREATE TABLE cloud_pod_api_tokens (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL,
    role             text NOT NULL CHECK (role IN ('customer', 'service', 'admin')),
    customer_id      text,
    token_sha256     text NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_used_at     timestamptz,
    revoked_at       timestamptz,
    CHECK ((role = 'customer') = (customer_id IS NOT NULL))
);
