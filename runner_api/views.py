"""JSON shapes of pods and tasks, and the provisioning progress a customer sees."""

from . import keys, operations


def iso(value):
    return value.isoformat() if value is not None else None


def customer_error(row):
    """What a customer reads instead of the error itself (internal URLs, token ids, step names stay
    with the admins): a plain sentence and a reference support finds in the provisioning queue."""
    if not row.get("last_error"):
        return None
    reference = f"task-{row['latest_task_id']}" if row.get("latest_task_id") else f"pod-{row['id']}"
    if row["status"] == "FAILED":
        return (f"Setting up your pod did not succeed and our team has been told. If you contact support, "
                f"quote reference {reference}.")
    return f"A step did not succeed the first time and is being retried automatically (reference {reference})."


def pod(row, admin=False):
    view = {
        "id": str(row["id"]), "hostname": row["hostname"], "plan_code": row["plan_code"], "domain": row["domain"],
        "status": row["status"], "vmid": row["vmid"], "node": row["node"], "ip": row["ip"],
        "created_at": iso(row["created_at"]), "activated_at": iso(row["activated_at"]),
        "last_error": row["last_error"] if admin else customer_error(row),
    }
    view["suspension"] = suspension(row)
    view["ssh"] = ssh(row)
    view["https"] = https(row)
    view["transfer"] = transfer(row)
    if admin:
        view["customer_id"] = row["customer_id"]
    return view


def suspension(row):
    """Why the pod is suspended (written when the SUSPEND was asked for) and since when (once it
    succeeded); null for a pod that is not suspended nor being suspended."""
    if not row.get("suspend_reason"):
        return None
    return {"reason": row["suspend_reason"], "since": iso(row.get("suspended_at"))}


def transfer(row):
    """This month's transfer as ``cloudpods meter`` last counted it (0 before its first pass), and the
    throttle in force on the pod's network (MB/s; null: none)."""
    rate = row.get("transfer_rate_mbps")
    return {"month_bytes": int(row.get("transfer_month_bytes") or 0),
            "rate_limit_mbps": float(rate) if rate is not None else None}


def usage(row, months, quota_bytes):
    """GET /api/cloud-pods/{id}/usage: per month, newest first; the current month's quota is the pod's
    plan's now (null: unmetered), a past month's the one it was counted against."""
    entries = []
    for month in months:
        used = month["bytes_in"] + month["bytes_out"]
        quota = month["quota_bytes"]
        entries.append({"month": month["month"].strftime("%Y-%m"), "bytes_in": month["bytes_in"],
                        "bytes_out": month["bytes_out"], "total_bytes": used, "quota_bytes": quota,
                        "percent": round(100.0 * used / quota, 1) if quota else None,
                        "restarts": month["restarts"], "warned_at": iso(month["warned_at"]),
                        "exceeded_at": iso(month["exceeded_at"]), "updated_at": iso(month["updated_at"])})
    return {"pod_id": str(row["id"]), "plan_code": row["plan_code"], "quota_bytes": quota_bytes,
            "rate_limit_mbps": transfer(row)["rate_limit_mbps"], "months": entries}


def ssh(row):
    """How the customer logs in: host (the domain, else the IP), port and user as the playbooks
    reported them, the pod's host key fingerprints, and the keys that may log in."""
    return {"host": row.get("domain") or row.get("ip"), "port": row.get("ssh_port"), "user": row.get("ssh_user"),
            "host_key_fingerprints": list(row.get("ssh_host_keys") or []),
            "keys": keys.describe(row.get("ssh_public_keys") or [])}


def https(row):
    """The certificate's state as the last run reported it; while pending, when the background
    retry tries next (``next_attempt_at``, null when none is queued)."""
    status = row.get("https_status") or "none"
    reason = row.get("https_reason") or ""
    if row.get("https_status") is None and row.get("status") == "PROVISIONING":
        reason = "HTTPS is set up while the pod is provisioned."
    return {"status": status, "reason": reason, "not_after": iso(row.get("https_not_after")),
            "next_attempt_at": iso(row.get("https_next_attempt_at")) if status == "pending" else None}


def backups(row):
    """The pod's archives as the worker last listed them (``listed_at``: null, never listed yet)."""
    return {"pod_id": str(row["id"]), "listed_at": iso(row.get("backups_listed_at")),
            "backups": list(row.get("backups") or [])}


def task(row):
    return {
        "id": row["id"], "pod_id": str(row["subscription_id"]), "hostname": row.get("hostname"),
        "plan_code": row.get("plan_code"), "type": row["task_type"], "status": row["status"],
        "attempts": row["attempts"], "max_attempts": row["max_attempts"], "worker_id": row["worker_id"],
        "lease_expires_at": iso(row["lease_expires_at"]), "last_error": row["last_error"],
        "run_at": iso(row["run_at"]), "created_at": iso(row["created_at"]), "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]), "params": dict(row.get("params") or {}),
    }


def progress(latest_task, events):
    """Steps of the latest operation, from the events of its latest attempt (its operation's
    ``progress_steps`` in runner_api/operations.py; none: no steps)."""
    if latest_task is None:
        return {"operation": None, "operation_status": None, "attempts": None, "percent": 0, "steps": []}
    attempt = latest_task["attempts"]
    seen = {}
    for event in events:
        if event["attempt"] != attempt:
            continue
        role = event["step"].split(" : ", 1)[0]
        if event["status"] == "failed":
            seen[role] = "failed"
        elif seen.get(role) != "failed":
            seen[role] = "started" if event["status"] == "started" else "done"
    finished = latest_task["status"] == "COMPLETED"
    steps = []
    known_steps = operations.progress_steps(latest_task["task_type"])
    roles = [role for role, _label in known_steps]
    last_seen = max((roles.index(role) for role in seen if role in roles), default=-1)
    for index, (role, label) in enumerate(known_steps):
        state = seen.get(role)
        if state == "failed":
            status = "failed"
        elif state and (finished or index < last_seen or latest_task["status"] != "RUNNING"):
            status = "done"
        elif state:
            status = "running"
        elif finished or index < last_seen:
            status = "skipped"  # not part of this run (no domain, or a role the playbook does not have)
        else:
            status = "pending"
        steps.append({"step": role, "label": label, "status": status})
    done = sum(1 for step in steps if step["status"] in ("done", "skipped"))
    percent = 100 if finished else (int(100 * done / len(steps)) if steps else 0)
    return {"operation": latest_task["task_type"], "operation_status": latest_task["status"],
            "attempts": latest_task["attempts"], "percent": percent, "steps": steps}
