"""The plan catalogue, read from the collection's ``playbooks/vars/plans.yml`` (key ``cloudpods_plans``).

runner_api holds no plan data of its own: the playbooks and the API read the same file.
"""

import re
import threading

import yaml

# The plan's ``bandwidth`` as sold: "<N>GB/mo" (a monthly quota; GB are GiB here, as the catalogue's
# disk_gb and memory are) or "unmetered" (counted, never limited).
QUOTA_LABEL = re.compile(r"^([1-9][0-9]{0,6})\s*GB/mo$")
UNMETERED = "unmetered"
GIB = 1024 ** 3


def transfer_quota_bytes(bandwidth):
    """The monthly transfer quota in bytes of a plan's ``bandwidth`` label, None when unmetered;
    ValueError for any other text (the catalogue is refused at start-up then)."""
    label = str(bandwidth or "").strip()
    if label.lower() == UNMETERED:
        return None
    match = QUOTA_LABEL.match(label)
    if not match:
        raise ValueError(f"bandwidth {label[:40]!r} is neither '<N>GB/mo' nor 'unmetered'")
    return int(match.group(1)) * GIB


PUBLIC_FIELDS = ("name", "price", "vcpu", "memory_mb", "disk_gb", "storage_class", "bandwidth")
COMPARE_ROWS = (
    ("price", "Price (USD per month)"),
    ("vcpu", "vCPU"),
    ("memory_mb", "RAM (MiB)"),
    ("disk_gb", "Storage (GiB)"),
    ("storage_class", "Storage type"),
    ("bandwidth", "Bandwidth"),
)


class PlanCatalogue:
    """Plans by code, reloaded when the file changes (a price change needs no restart)."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp = None
        self._plans = {}

    def plans(self):
        stamp = self.path.stat().st_mtime_ns
        if stamp != self._stamp:
            with self._lock:
                with open(self.path, encoding="utf-8") as handle:
                    data = yaml.safe_load(handle) or {}
                plans = data.get("cloudpods_plans")
                if not isinstance(plans, dict) or not plans:
                    raise ValueError(f"{self.path}: no 'cloudpods_plans' mapping")
                for code, plan in plans.items():
                    try:
                        transfer_quota_bytes((plan or {}).get("bandwidth"))
                    except ValueError as exc:
                        raise ValueError(f"{self.path}: plan {code}: {exc}") from None
                self._plans, self._stamp = plans, stamp
        return self._plans

    def get(self, code):
        return self.plans().get(code)

    def quota_bytes(self, code):
        """The plan's monthly transfer quota in bytes; None: unmetered, or no such plan (a pod on a
        plan the catalogue no longer has is counted, never limited)."""
        plan = self.get(code)
        return transfer_quota_bytes(plan.get("bandwidth")) if plan else None

    def public(self, code):
        plan = self.get(code)
        if plan is None:
            return None
        view = {"code": code}
        view.update({key: plan.get(key) for key in PUBLIC_FIELDS})
        return view

    def public_list(self):
        return [self.public(code) for code in self.plans()]

    def comparison(self):
        codes = list(self.plans())
        return {
            "plans": [{"code": code, "name": self.get(code).get("name")} for code in codes],
            "rows": [{"feature": key, "label": label, "values": {code: self.get(code).get(key) for code in codes}}
                     for key, label in COMPARE_ROWS],
        }
