-- Issue 16: each pod's transfer, counted from Proxmox's netin/netout counters by `cloudpods meter`
-- (runner_api/metering.py), per calendar month (UTC); the plan's quota acted on at 80% and 100%.
-- Applied by `cloudpods migrate` after 0007 (never edit an applied migration: add 0009).

-- The counters as the meter last read them: the next pass counts from here. PVE's counters are the
-- sum of the CT's veths' 64-bit byte counters since the CT started (FACTS.md A3), so they are kept as
-- numeric: a value above 2^63 is legal. started_at: when the CT started, as read_at - uptime; a later
-- start means the counters began again from zero.
CREATE TABLE cloud_pod_traffic_counters (
    subscription_id  uuid PRIMARY KEY REFERENCES cloud_pod_subscriptions (id),
    vmid             integer NOT NULL,
    netin            numeric(20, 0) NOT NULL CHECK (netin >= 0),
    netout           numeric(20, 0) NOT NULL CHECK (netout >= 0),
    started_at       timestamptz NOT NULL,
    read_at          timestamptz NOT NULL
);

-- Bytes counted per pod per month. bytes_in: what the pod received (PVE's netin), bytes_out: what it
-- sent (netout); the quota counts both. restarts: how often the counters began again this month.
-- quota_bytes: the plan's quota when last counted (NULL: unmetered). warned_at / exceeded_at: when 80%
-- and 100% of it were reached (the webhook is sent then, once; both are cleared when a plan change lifts
-- the quota above the usage). notified_level: the last customer mail the TRANSFER_QUOTA operation sent
-- this month (0: none, 80, 100).
CREATE TABLE cloud_pod_transfer_usage (
    subscription_id  uuid NOT NULL REFERENCES cloud_pod_subscriptions (id),
    month            date NOT NULL CHECK (extract(day FROM month) = 1),
    bytes_in         bigint NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out        bigint NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    restarts         integer NOT NULL DEFAULT 0 CHECK (restarts >= 0),
    quota_bytes      bigint CHECK (quota_bytes IS NULL OR quota_bytes > 0),
    warned_at        timestamptz,
    exceeded_at      timestamptz,
    notified_level   smallint NOT NULL DEFAULT 0 CHECK (notified_level IN (0, 80, 100)),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, month)
);

-- The transfer limit in force on the pod: the rate (MB/s) its net0 carries, set and cleared by the
-- TRANSFER_QUOTA operation (playbooks/transfer_quota.yml). NULL: not throttled.
ALTER TABLE cloud_pod_subscriptions
    ADD COLUMN transfer_rate_mbps numeric CHECK (transfer_rate_mbps IS NULL OR transfer_rate_mbps > 0);

-- A pod over its quota may be suspended for it (CLOUDPODS_TRANSFER_QUOTA_POLICY=suspend), and only such
-- a suspension is lifted by the meter when the month ends or the plan's quota grows.
ALTER TABLE cloud_pod_subscriptions DROP CONSTRAINT cloud_pod_subscriptions_suspend_reason_check;
ALTER TABLE cloud_pod_subscriptions ADD CONSTRAINT cloud_pod_subscriptions_suspend_reason_check
    CHECK (suspend_reason IS NULL OR suspend_reason IN ('non-payment', 'abuse', 'admin', 'transfer-quota'));

ALTER TABLE cloud_pod_provisioning_tasks DROP CONSTRAINT cloud_pod_provisioning_tasks_task_type_check;
ALTER TABLE cloud_pod_provisioning_tasks ADD CONSTRAINT cloud_pod_provisioning_tasks_task_type_check
    CHECK (task_type IN ('CREATE_CONTAINER', 'RESTART', 'SUSPEND', 'RESUME', 'TERMINATE', 'SET_SSH_KEYS',
                         'ISSUE_HTTPS', 'REPAIR', 'CHANGE_PLAN', 'REINSTALL', 'BACKUP', 'RESTORE',
                         'TRANSFER_QUOTA'));

-- One row per metering pass target (the Proxmox cluster of PROXMOX_API_URL): the last pass that read
-- the counters (the metering lag is now() - last_success_at), how many pods it counted and the calls it
-- made, and the last error.
CREATE TABLE cloud_pod_meter_state (
    cluster          text PRIMARY KEY,
    last_pass_at     timestamptz NOT NULL,
    last_success_at  timestamptz,
    pods             integer NOT NULL DEFAULT 0,
    api_calls        integer NOT NULL DEFAULT 0,
    last_error       text
);

-- Each node as the last pass saw it in /cluster/resources (free capacity for dashboards; mem, disk
-- and cpu are NULL while the node is not online, as PVE reports them only then).
CREATE TABLE cloud_pod_nodes (
    node             text PRIMARY KEY,
    status           text NOT NULL,
    maxmem           bigint,
    mem              bigint,
    maxdisk          bigint,
    disk             bigint,
    maxcpu           integer,
    cpu              double precision,
    sampled_at       timestamptz NOT NULL
);
