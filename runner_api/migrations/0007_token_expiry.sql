-- Issue 14: runner_api's bearer tokens expire, and a rotation keeps the old token valid for an overlap.
-- `cloudpods token create --expires-in` sets expires_at; `cloudpods token rotate <id> --overlap` makes the
-- successor (same name, role and customer), records it in replaced_by and moves the old token's expires_at
-- to the end of the overlap (never later than it was). A token past expires_at gets 401 token-expired.
-- NULL expires_at: the token never expires (tokens made before this migration).
ALTER TABLE cloud_pod_api_tokens
    ADD COLUMN expires_at  timestamptz,
    ADD COLUMN replaced_by bigint REFERENCES cloud_pod_api_tokens (id);
