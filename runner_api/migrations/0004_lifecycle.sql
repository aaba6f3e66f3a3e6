-- Issue 13: the pod's lifecycle through the API (suspend, resume, terminate, repair, and the
-- operations other parts of the issue add: change plan, reinstall, backups, restore).
-- Applied by `cloudpods migrate` after 0003 (never edit an applied migration: add 0005).

-- Every operation the registry (runner_api/operations.py) queues, present and planned.
ALTER TABLE cloud_pod_provisioning_tasks DROP CONSTRAINT cloud_pod_provisioning_tasks_task_type_check;
ALTER TABLE cloud_pod_provisioning_tasks ADD CONSTRAINT cloud_pod_provisioning_tasks_task_type_check
    CHECK (task_type IN ('CREATE_CONTAINER', 'RESTART', 'SUSPEND', 'RESUME', 'TERMINATE', 'SET_SSH_KEYS',
                         'ISSUE_HTTPS', 'REPAIR', 'CHANGE_PLAN', 'REINSTALL', 'BACKUP', 'RESTORE'));

-- Why the pod is (or is being) suspended: written with the SUSPEND task, in one transaction, and
-- cleared when a RESUME succeeds. NULL for a pod that was never suspended.
ALTER TABLE cloud_pod_subscriptions
    ADD COLUMN suspend_reason text CHECK (suspend_reason IS NULL OR suspend_reason IN ('non-payment', 'abuse', 'admin')),
    ADD COLUMN suspended_at timestamptz;

-- Cursor paging (my-pods, admin/all): newest first, then id.
CREATE INDEX cloud_pod_subscriptions_page ON cloud_pod_subscriptions (created_at DESC, id);
CREATE INDEX cloud_pod_subscriptions_customer_page ON cloud_pod_subscriptions (customer_id, created_at DESC, id);
