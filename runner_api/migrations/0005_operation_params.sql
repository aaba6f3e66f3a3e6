-- Issue 13: an operation's own arguments, written with its task in one transaction (the API
-- checked them first): CHANGE_PLAN {"plan": "<code>"}; later RESTORE {"archive": "<volid>"}.
-- runner_api/operations.py turns them into the playbook's extra vars (order data: written
-- !unsafe like every other extra var). Tasks of the other operations keep {}.
-- Applied by `cloudpods migrate` after 0004 (never edit an applied migration: add 0006).
ALTER TABLE cloud_pod_provisioning_tasks
    ADD COLUMN params jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(params) = 'object');
