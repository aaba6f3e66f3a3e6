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
