-- Issue 13: webhooks to mPanel (README, "Webhooks to mPanel"; runner_api/webhooks.py delivers).
-- Applied by `cloudpods migrate` after 0002 (never edit an applied migration: add a new one).
--
-- The outbox: one row per event, written by the triggers below IN THE TRANSACTION THAT MAKES
-- THE CHANGE, whichever code makes it (repository.py today, any operation added later): a change
-- that commits has its event, a change that rolls back has none.
--   pod.status_changed   a pod is created (previous_status null) or its status changes
--   operation.completed  a task (an operation) ends COMPLETED
--   operation.failed     a task ends FAILED for good (its attempts used up, or not retryable)
-- A failed attempt that will be retried sends nothing (its outcome follows); the background
-- HTTPS retry (ISSUE_HTTPS) sends nothing either: the operation that reported HTTPS pending did.

-- The last sequence number given to an event of each pod: the row lock taken when it is
-- incremented orders the events of one pod as their transactions commit (no gaps, no duplicates).
CREATE TABLE cloud_pod_webhook_sequences (
    subscription_id  uuid PRIMARY KEY REFERENCES cloud_pod_subscriptions (id),
    last_sequence    bigint NOT NULL
);

CREATE TABLE cloud_pod_webhook_outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,  -- X-CloudPods-Event-Id
    subscription_id  uuid NOT NULL REFERENCES cloud_pod_subscriptions (id),
    sequence         bigint NOT NULL CHECK (sequence >= 1),
    event_type       text NOT NULL,
    payload          jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Delivery: attempts made, when the next one is due, the outcome of the last one.
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status      integer,  -- the receiver's HTTP status; null: no answer (connection error, timeout)
    last_error       text,
    delivered_at     timestamptz,
    UNIQUE (subscription_id, sequence)
);
-- What the deliverer scans: undelivered rows by due time, and each pod's earliest undelivered one.
CREATE INDEX cloud_pod_webhook_outbox_due ON cloud_pod_webhook_outbox (next_attempt_at, id)
    WHERE delivered_at IS NULL;
CREATE INDEX cloud_pod_webhook_outbox_pod_pending ON cloud_pod_webhook_outbox (subscription_id, sequence)
    WHERE delivered_at IS NULL;

CREATE FUNCTION cloud_pod_webhook_enqueue(pod uuid, kind text, data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    next_sequence bigint;
BEGIN
    INSERT INTO cloud_pod_webhook_sequences AS q (subscription_id, last_sequence) VALUES (pod, 1)
    ON CONFLICT (subscription_id) DO UPDATE SET last_sequence = q.last_sequence + 1
    RETURNING last_sequence INTO next_sequence;
    INSERT INTO cloud_pod_webhook_outbox (subscription_id, sequence, event_type, payload)
    VALUES (pod, next_sequence, kind, data);
END;
$$;

-- Only these columns of a pod go out (never keys, idempotency keys or digests).
CREATE FUNCTION cloud_pod_webhook_pod_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM cloud_pod_webhook_enqueue(NEW.id, 'pod.status_changed', jsonb_build_object(
        'pod', jsonb_build_object(
            'id', NEW.id, 'customer_id', NEW.customer_id, 'hostname', NEW.hostname, 'domain', NEW.domain,
            'plan_code', NEW.plan_code, 'status', NEW.status,
            'previous_status', CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
            'last_error', NEW.last_error)));
    RETURN NULL;
END;
$$;

CREATE FUNCTION cloud_pod_webhook_operation_outcome() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pod record;
BEGIN
    SELECT id, customer_id, hostname, domain INTO pod FROM cloud_pod_subscriptions WHERE id = NEW.subscription_id;
    PERFORM cloud_pod_webhook_enqueue(NEW.subscription_id,
        CASE NEW.status WHEN 'COMPLETED' THEN 'operation.completed' ELSE 'operation.failed' END,
        jsonb_build_object(
            'pod', jsonb_build_object('id', pod.id, 'customer_id', pod.customer_id, 'hostname', pod.hostname,
                                      'domain', pod.domain),
            'operation', jsonb_build_object(
                'task_id', NEW.id, 'type', NEW.task_type, 'status', NEW.status, 'attempts', NEW.attempts,
                'max_attempts', NEW.max_attempts, 'error', NEW.last_error,
                'started_at', NEW.started_at, 'finished_at', NEW.finished_at)));
    RETURN NULL;
END;
$$;

CREATE TRIGGER cloud_pod_webhook_pod_created
    AFTER INSERT ON cloud_pod_subscriptions
    FOR EACH ROW EXECUTE FUNCTION cloud_pod_webhook_pod_status();
CREATE TRIGGER cloud_pod_webhook_pod_status_changed
    AFTER UPDATE OF status ON cloud_pod_subscriptions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION cloud_pod_webhook_pod_status();
CREATE TRIGGER cloud_pod_webhook_operation_ended
    AFTER UPDATE OF status ON cloud_pod_provisioning_tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('COMPLETED', 'FAILED')
                       AND NEW.task_type <> 'ISSUE_HTTPS')
    EXECUTE FUNCTION cloud_pod_webhook_operation_outcome();
