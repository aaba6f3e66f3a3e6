-- Issue 12: the customer's way in (SSH keys, HTTPS) and the background HTTPS retry.
-- Applied by `cloudpods migrate` after 0001 (never edit an applied migration: add 0003).

-- What the customer asked for and what the playbooks reported.
ALTER TABLE cloud_pod_subscriptions
    -- The keys the pod is converged to (or being converged to, while a SET_SSH_KEYS task is open):
    -- normalised OpenSSH public key lines (plugins/module_utils/ssh_keys.py, PublicKey.line).
    ADD COLUMN ssh_public_keys jsonb NOT NULL DEFAULT '[]'::jsonb
        CHECK (jsonb_typeof(ssh_public_keys) = 'array'),
    -- set_stats `ssh_host_keys`: ["SHA256:<b64> (ED25519)", ...]; NULL until a run reported them.
    ADD COLUMN ssh_host_keys jsonb CHECK (ssh_host_keys IS NULL OR jsonb_typeof(ssh_host_keys) = 'array'),
    -- set_stats `ssh`: {"user": ..., "port": ...}.
    ADD COLUMN ssh_user text,
    ADD COLUMN ssh_port integer CHECK (ssh_port IS NULL OR ssh_port BETWEEN 1 AND 65535),
    -- set_stats `https`: {"status", "reason", "not_after"}; NULL until a run reported it.
    ADD COLUMN https_status text CHECK (https_status IS NULL OR https_status IN ('active', 'pending', 'none')),
    ADD COLUMN https_reason text,
    ADD COLUMN https_not_after timestamptz,
    -- How many runs in a row reported `pending` (the retry's backoff grows with it; 0 once active).
    ADD COLUMN https_pending_runs integer NOT NULL DEFAULT 0 CHECK (https_pending_runs >= 0);

-- New operations: SET_SSH_KEYS (customer endpoint) and ISSUE_HTTPS (the background retry).
ALTER TABLE cloud_pod_provisioning_tasks DROP CONSTRAINT cloud_pod_provisioning_tasks_task_type_check;
ALTER TABLE cloud_pod_provisioning_tasks ADD CONSTRAINT cloud_pod_provisioning_tasks_task_type_check
    CHECK (task_type IN ('CREATE_CONTAINER', 'RESTART', 'SUSPEND', 'RESUME', 'TERMINATE', 'SET_SSH_KEYS',
                         'ISSUE_HTTPS'));

-- One operation per pod at a time still holds for every operation a person asks for; the
-- background HTTPS retry is not one of them: a retry waiting in the queue must never turn a
-- restart or a key change into a 409. The claim query keeps the two apart (a retry is claimed
-- only when its pod has no other open task; no other task of a pod is claimed while its retry runs).
DROP INDEX cloud_pod_provisioning_tasks_one_open;
CREATE UNIQUE INDEX cloud_pod_provisioning_tasks_one_open
    ON cloud_pod_provisioning_tasks (subscription_id)
    WHERE status IN ('PENDING', 'RUNNING') AND task_type <> 'ISSUE_HTTPS';
-- At most one retry per pod, waiting or running.
CREATE UNIQUE INDEX cloud_pod_provisioning_tasks_one_https_retry
    ON cloud_pod_provisioning_tasks (subscription_id)
    WHERE status IN ('PENDING', 'RUNNING') AND task_type = 'ISSUE_HTTPS';
