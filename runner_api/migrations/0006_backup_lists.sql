-- Issue 13: the pod's backup archives as the worker last read them from the Proxmox host (the API
-- has no way onto the host): GET /api/cloud-pods/{id}/backups answers from here. Written by every
-- run that lists the pod's backup directory (BACKUP, RESTORE, REINSTALL) and by the worker's
-- periodic catalog of the backup root (playbooks/backup_catalog.yml, CLOUDPODS_BACKUP_LIST_SECONDS).
-- backups: [{name, created_at, size_bytes, kind: manual|scheduled}], newest first, checked by the
-- worker (runner_api/worker.py reported_backups); backups_listed_at: when that list was read.
-- Applied by `cloudpods migrate` after 0005 (never edit an applied migration: add 0007).
ALTER TABLE cloud_pod_subscriptions
    ADD COLUMN backups jsonb CHECK (backups IS NULL OR jsonb_typeof(backups) = 'array'),
    ADD COLUMN backups_listed_at timestamptz;

-- Periodic jobs the workers share (one run per period for all of them): a worker claims a job by
-- moving last_started_at forward only when the period has passed since the last claim, in one
-- statement, so two workers never claim the same period. backup_catalog: the listing above.
CREATE TABLE cloud_pod_maintenance (
    name text PRIMARY KEY CHECK (name ~ '^[a-z_]{1,40}$'),
    last_started_at timestamptz NOT NULL,
    last_finished_at timestamptz,
    last_error text
);
