"""A small client for the simulator's ``/_lab`` control endpoints.

    control = LabControl.from_env(lab_env)
    control.reset()
    control.config(task_durations={"vzclone": 1.0}, dhcp_delay=0.5)
    control.fault(method="POST", path=r"/clone$", status=596, reason="Connection timed out")
    control.fault(task_fail={"type": "vzstart", "message": "startup for container '101' failed"})
    control.state()["containers"]["101"]["config"]
    control.hold("vzclone")              # the next clone task stays running ...
    control.wait_held("vzclone")         # ... returns once it is held (an event, not a sleep)
    control.release("vzclone")           # ... and goes on
"""

import requests


class LabControl:
    def __init__(self, url: str, key: str, ca_bundle: str | None = None, timeout: float = 10):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["X-Lab-Key"] = key
        # Passed with every request: a session-level verify loses to REQUESTS_CA_BUNDLE.
        self.verify = ca_bundle if ca_bundle else True
        self.timeout = timeout

    @classmethod
    def from_env(cls, env: dict) -> "LabControl":
        return cls(env["PVESIM_CONTROL_URL"], env["PVESIM_CONTROL_KEY"], env.get("PROXMOX_CA_BUNDLE"))

    def _call(self, method: str, path: str, body=None, timeout: float | None = None):
        response = self.session.request(method, f"{self.url}{path}", json=body, timeout=timeout or self.timeout,
                                        verify=self.verify)
        if response.status_code != 200:
            raise RuntimeError(f"/_lab{path}: {response.status_code} {response.reason}")
        return response.json()["data"]

    def health(self) -> dict:
        return self._call("GET", "/health")

    def reset(self) -> None:
        """Only the template left; faults, tasks, backups, added tokens and the log gone."""
        self._call("POST", "/reset")

    def state(self) -> dict:
        return self._call("GET", "/state")

    def requests(self) -> list:
        return self._call("GET", "/requests")

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    def fault(self, **spec) -> dict:
        """One fault: request (method, path, count, status, reason, after, close),
        ``latency_ms``, or ``task_fail={"type", "message" | "warnings", "count"}``."""
        return self._call("POST", "/faults", spec)

    def faults(self, specs: list) -> dict:
        return self._call("POST", "/faults", specs)

    def clear_faults(self) -> None:
        """Every fault gone; a task still held ends in an error ("task hold cleared")."""
        self._call("DELETE", "/faults")

    def hold(self, task_type: str, count: int = 1, timeout: float | None = None) -> dict:
        """Keep the next ``count`` tasks of ``task_type`` running after their duration, before their
        work, until ``release`` (or ``timeout`` seconds, at most 600). A queued ``task_fail`` of the
        type still decides how the held task ends."""
        spec = {"type": task_type, "count": count}
        if timeout is not None:
            spec["timeout"] = timeout
        return self._call("POST", "/faults", {"task_hold": spec})

    def holds(self) -> list:
        """Each hold: type, state (pending, taken, holding, released, expired, cancelled), held_at, released_at."""
        return self._call("GET", "/holds")

    def wait_held(self, task_type: str, timeout: float = 30) -> dict:
        """Return the hold once a task of ``task_type`` is held; AssertionError after ``timeout`` s."""
        answer = self._call("POST", "/holds/wait", {"type": task_type, "timeout": timeout}, timeout=timeout + 10)
        if not answer["held"]:
            raise AssertionError(f"no {task_type} task reached its hold within {timeout} s: {answer['holds']}")
        return answer["hold"]

    def release(self, task_type: str | None = None) -> list:
        """Let the held tasks (of ``task_type``) go on; pending holds of it are dropped."""
        return self._call("POST", "/holds/release", {"type": task_type} if task_type else {})

    def config(self, **values) -> dict:
        """task_durations={type: s}, default_task_duration, task_jitter, dhcp_delay, auth_failure_delay."""
        return self._call("POST", "/config", values)

    def add_token(self, token_id: str, secret: str, privs=None, acl: dict | None = None) -> dict:
        body = {"token_id": token_id, "secret": secret}
        if privs is not None:
            body["privs"] = list(privs)
        if acl is not None:
            body["acl"] = acl
        return self._call("POST", "/tokens", body)

    tokens = add_token

    def set_container(self, vmid: int, **changes) -> dict:
        """Change a CT behind the API's back: config keys (None deletes), or status."""
        return self._call("PUT", f"/containers/{vmid}", changes)

    def add_address(self, vmid: int, address: str, name: str = "eth0") -> list:
        """``ip addr add <address> dev <name>`` inside the running CT (an alias added by hand);
        returns the CT's interfaces as ``GET .../interfaces`` shows them."""
        return self._call("POST", f"/containers/{vmid}/addresses", {"name": name, "address": address})
