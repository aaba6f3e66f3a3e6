"""pvesim: a Proxmox VE API simulator for the Cloud Pods lab.

It speaks the subset of the PVE 8 REST API that the collection uses, over HTTPS, with
API-token authentication, ACLs, UPID tasks, config locks and fault injection. The
layers are kept apart so a real-container backend can replace the in-memory one:

- ``server``: HTTP(S), routing, authentication, the ``{"data": ...}`` envelope.
- ``api`` / ``control``: the PVE endpoints and the ``/_lab`` control endpoints.
- ``state`` (+ ``firewall``, ``backups``, ``tasks``, ``acl``, ``schema``): the state
  machine: configs, locks, tasks, permissions and parameter validation.
- ``backend``: the only code that would touch real containers.
"""

__version__ = "0.1.0"
