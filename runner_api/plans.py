"""The plan catalogue, read from the collection's ``playbooks/vars/plans.yml`` (key ``cloudpods_plans``).

runner_api holds no plan data of its own: the playbooks and the API read the same file.
"""

import threading

import yaml

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
                self._plans, self._stamp = plans, stamp
        return self._plans

    def get(self, code):
        return self.plans().get(code)

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
