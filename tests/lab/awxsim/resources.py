"""The objects: organizations, projects, inventories, groups, hosts, inventory sources, credential
types, credentials, job templates, notification templates and schedules.

Each kind has a field table (what a create or PATCH may set, its type, whether it is required,
its default) and validation that answers as DRF does: ``{"field": ["message"]}`` with a 400.
Named URLs (AWX ``docs/named_url.md``): ``<name>`` for organizations, ``<name>+<kind>`` for
credential types, ``<name>++<organization name>`` for projects, inventories and job templates;
in a name, ``+`` is written ``[+]`` and the URL reserved characters are percent-encoded.
"""

import copy
import datetime
import json
import os
import re
import shutil
import subprocess
import unicodedata
import threading
from urllib.parse import quote, unquote

import yaml

from . import errors, schedules

PROMPTS = ("variables", "inventory", "credential", "limit", "tags", "skip_tags", "job_type",
           "verbosity", "diff_mode", "scm_branch")

# field: (type, required, default); types: str, text, bool, int, dict, vars, fk:<kind>, choice
FIELDS = {
    "organizations": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "max_hosts": ("int", False, 0),
    },
    "projects": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "organization": ("fk:organizations", False, None),
        "scm_type": (("", "git", "svn", "insights", "archive"), False, ""),
        "scm_url": ("text", False, ""), "scm_branch": ("text", False, ""),
        "local_path": ("text", False, ""), "allow_override": ("bool", False, False),
        "scm_clean": ("bool", False, False), "scm_delete_on_update": ("bool", False, False),
        "scm_update_on_launch": ("bool", False, False), "scm_update_cache_timeout": ("int", False, 0),
        "credential": ("fk:credentials", False, None), "timeout": ("int", False, 0),
    },
    "inventories": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "organization": ("fk:organizations", True, None), "variables": ("vars", False, ""),
        "kind": (("", "smart", "constructed"), False, ""), "host_filter": ("text", False, ""),
        "prevent_instance_group_fallback": ("bool", False, False),
    },
    "groups": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "inventory": ("fk:inventories", True, None), "variables": ("vars", False, ""),
    },
    "hosts": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "inventory": ("fk:inventories", True, None), "variables": ("vars", False, ""),
        "enabled": ("bool", False, True),
    },
    # AWX InventorySourceOptions (awx/main/models/inventory.py); source choices as AWX 24.
    "inventory_sources": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "inventory": ("fk:inventories", True, None),
        "source": (("file", "constructed", "scm", "ec2", "gce", "azure_rm", "vmware", "satellite6", "openstack",
                    "rhv", "controller", "insights", "terraform", "openshift_virtualization"), True, None),
        "source_path": ("text", False, ""), "source_vars": ("vars", False, ""),
        "source_project": ("fk:projects", False, None), "scm_branch": ("text", False, ""),
        "credential": ("fk:credentials", False, None), "enabled_var": ("text", False, ""),
        "enabled_value": ("text", False, ""), "host_filter": ("text", False, ""),
        "overwrite": ("bool", False, False), "overwrite_vars": ("bool", False, False),
        "timeout": ("int", False, 0), "verbosity": ((0, 1, 2), False, 1), "limit": ("text", False, ""),
        "update_on_launch": ("bool", False, False), "update_cache_timeout": ("int", False, 0),
    },
    "credential_types": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "kind": (("cloud", "net"), True, None), "inputs": ("dict", False, {}),
        "injectors": ("dict", False, {}),
    },
    "credentials": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "organization": ("fk:organizations", False, None),
        "credential_type": ("fk:credential_types", True, None), "inputs": ("dict", False, {}),
    },
    "job_templates": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "job_type": (("run", "check"), False, "run"),
        "inventory": ("fk:inventories", False, None), "project": ("fk:projects", True, None),
        "playbook": ("text", True, None), "scm_branch": ("text", False, ""),
        "forks": ("int", False, 0), "limit": ("text", False, ""), "verbosity": ((0, 1, 2, 3, 4, 5), False, 0),
        "extra_vars": ("vars", False, ""), "job_tags": ("text", False, ""), "skip_tags": ("text", False, ""),
        "diff_mode": ("bool", False, False), "survey_enabled": ("bool", False, False),
        "timeout": ("int", False, 0),
        **{"ask_%s_on_launch" % prompt: ("bool", False, False) for prompt in PROMPTS},
    },
    # AWX NotificationTemplate; notification_configuration is checked against the type's
    # init_parameters (notifications.py), password fields read back "$encrypted$".
    "notification_templates": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "organization": ("fk:organizations", True, None),
        "notification_type": (("email", "grafana", "irc", "mattermost", "pagerduty", "rocketchat", "slack",
                               "twilio", "webhook"), True, None),
        "notification_configuration": ("dict", False, {}), "messages": ("dict", False, None),
    },
    # AWX Schedule (LaunchConfigurationBase prompts + rrule); schedules.py checks the rrule.
    "schedules": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "unified_job_template": ("fk:job_templates", True, None), "rrule": ("text", True, None),
        "enabled": ("bool", False, True), "extra_data": ("dict", False, {}),
        "inventory": ("fk:inventories", False, None), "scm_branch": ("text", False, None),
        "job_type": (("run", "check"), False, None), "job_tags": ("text", False, None),
        "skip_tags": ("text", False, None), "limit": ("text", False, None),
        "diff_mode": ("bool", False, None), "verbosity": ((0, 1, 2, 3, 4, 5), False, None),
        "forks": ("int", False, None), "job_slice_count": ("int", False, None), "timeout": ("int", False, None),
    },
}

TYPE_NAMES = {
    "organizations": "organization", "projects": "project", "inventories": "inventory",
    "credential_types": "credential_type", "credentials": "credential", "job_templates": "job_template",
    "groups": "group", "hosts": "host", "inventory_sources": "inventory_source",
    "notification_templates": "notification_template", "schedules": "schedule",
}
VERBOSE = {
    "organizations": "Organization", "projects": "Project", "inventories": "Inventory",
    "credential_types": "Credential type", "credentials": "Credential", "job_templates": "Job template",
    "groups": "Group", "hosts": "Host", "inventory_sources": "Inventory source",
    "notification_templates": "Notification template", "schedules": "Schedule",
}
NOTIFY = ("notification_templates_started", "notification_templates_success", "notification_templates_error")
# only the sub-resources the stand-in serves (jobs, credentials lists: awxsim/README.md)
RELATED = {
    "organizations": (), "projects": ("update", "project_updates"), "inventories": (), "credential_types": (),
    "credentials": (), "groups": ("hosts",), "hosts": (), "notification_templates": (), "schedules": (),
    "inventory_sources": ("update", "inventory_updates", "schedules") + NOTIFY,
    "job_templates": ("launch", "survey_spec", "credentials", "schedules") + NOTIFY,
}
# associations (sub-list attach/detach): (kind, relation) -> the kind of the attached objects
ASSOCIATIONS = {("groups", "hosts"): "hosts", ("groups", "children"): "groups",
                **{(kind, rel): "notification_templates" for kind in ("job_templates", "inventory_sources") for rel in NOTIFY}}


# kinds whose names are unique within another object (AWX unique_together), not an organization
UNIQUE_SCOPE = {"groups": "inventory", "hosts": "inventory", "inventory_sources": "inventory",
                "schedules": "unified_job_template"}


ENCRYPTED = "$encrypted$"
# notification type -> parameter -> (type, default) (AWX awx/main/notifications/*_backend.py init_parameters)
NOTIFICATION_PARAMETERS = {
    "email": {"host": ("string", None), "port": ("int", None), "username": ("string", None),
              "password": ("password", None), "use_tls": ("bool", None), "use_ssl": ("bool", None),
              "sender": ("string", None), "recipients": ("list", None), "timeout": ("int", 30)},
}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_name(name: str) -> str:
    """One name as it appears in a named URL."""
    return quote(name.replace("+", "[+]"), safe="[]+-_.~!$'()*,")


def parse_vars(text):
    """Variables text as AWX reads it: JSON, else YAML (safe loader); blank is ``{}``."""
    if isinstance(text, dict):
        return dict(text)
    if not text or not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from exc


def decode_part(part: str) -> str:
    return unquote(part).replace("[+]", "+")


class Store:
    """All objects, by kind and id; one lock around every change."""

    def __init__(self, projects_root=None):
        self.projects_root = projects_root  # where a git project's update checks it out (None: it only resolves)
        self.lock = threading.RLock()
        self.objects = {kind: {} for kind in FIELDS}
        self.survey_specs = {}
        self.jt_credentials = {}  # job template id -> credential ids, in attach order
        self.associations = {}  # (kind, id, relation) -> attached ids (ASSOCIATIONS), in attach order
        self.updates = {}  # "project_updates"/"inventory_updates" -> id -> update
        self.next_id = {kind: 1 for kind in FIELDS}

    # ------------------------------------------------------------ lookups

    def get(self, kind: str, ident: str) -> dict:
        """By id (digits) or by named URL; 404 ``{"detail": "Not found."}`` otherwise."""
        table = self.objects.get(kind)
        if table is None:
            raise errors.detail(404, errors.NOT_FOUND)
        if ident.isdigit():
            obj = table.get(int(ident))
        else:
            obj = self._by_named_url(kind, ident)
        if obj is None:
            raise errors.detail(404, errors.NOT_FOUND)
        return obj

    def _by_named_url(self, kind: str, ident: str):
        for obj in self.objects[kind].values():
            if self.named_url_key(kind, obj) == self._normalise(kind, ident):
                return obj
        return None

    def _normalise(self, kind, ident):
        if kind == "organizations":
            return (decode_part(ident),)
        if kind == "credential_types":
            name, _sep, ctype = ident.rpartition("+")
            return (decode_part(name), decode_part(ctype))
        if kind in ("projects", "inventories", "job_templates"):
            name, sep, org = ident.partition("++")
            return (decode_part(name), decode_part(org)) if sep else None
        return None

    def named_url_key(self, kind: str, obj: dict):
        if kind == "organizations":
            return (obj["name"],)
        if kind == "credential_types":
            return (obj["name"], obj["kind"])
        if kind in ("projects", "inventories", "job_templates"):
            return (obj["name"], self._org_name(obj))
        return None

    def named_url(self, kind: str, obj: dict):
        key = self.named_url_key(kind, obj)
        if key is None:
            return None
        if kind == "credential_types":
            ident = "%s+%s" % (encode_name(key[0]), encode_name(key[1]))
        else:
            ident = "++".join(encode_name(part) for part in key)
        return "/api/v2/%s/%s/" % (kind, ident)

    def _org_name(self, obj):
        org = self.objects["organizations"].get(obj.get("organization"))
        return org["name"] if org else ""

    def organization_of(self, kind: str, obj: dict):
        if kind == "organizations":
            return obj["id"]
        if kind in ("groups", "hosts", "inventory_sources"):
            inventory = self.objects["inventories"].get(obj.get("inventory"))
            return inventory.get("organization") if inventory else None
        if kind == "schedules":
            jt = self.objects["job_templates"].get(obj.get("unified_job_template"))
            return self.organization_of("job_templates", jt) if jt else None
        if kind == "job_templates" and obj.get("organization") is None:
            project = self.objects["projects"].get(obj.get("project"))
            return project.get("organization") if project else None
        return obj.get("organization")

    # ------------------------------------------------------------ changes

    def create(self, kind: str, data) -> dict:
        with self.lock:
            values = self.validate(kind, data, partial=False)
            obj = {"id": self.next_id[kind], "created": now(), "modified": now()}
            for field, (_ftype, _required, default) in FIELDS[kind].items():
                obj[field] = values.get(field, copy.deepcopy(default))
            self._derive(kind, obj)
            self._check_rules(kind, obj, values, None)
            self._check_unique(kind, obj)
            self.objects[kind][obj["id"]] = obj
            self.next_id[kind] += 1
            if kind == "projects" and obj["scm_type"]:
                self.project_update(obj)
            return obj

    def update(self, kind: str, obj: dict, data) -> dict:
        with self.lock:
            values = self.validate(kind, data, partial=True)
            candidate = dict(obj, **values)
            self._derive(kind, candidate)
            self._check_rules(kind, candidate, values, obj)
            self._check_unique(kind, candidate)
            changed_scm = any(values.get(f, obj.get(f)) != obj.get(f) for f in ("scm_type", "scm_url", "scm_branch"))
            obj.update(candidate, modified=now())
            if kind == "projects" and obj["scm_type"] and changed_scm:
                self.project_update(obj)
            return obj

    def project_update(self, project: dict) -> dict:
        """A git project's SCM update, done at once: AWX runs one when a project is made or its
        source changes. The stand-in resolves the branch with ``git ls-remote`` and only for a
        URL on this machine (``file://`` or a path): the lab sends nothing to other hosts. Any
        other URL gives a failed update with the reason in ``job_explanation``. With a projects
        root (config ``projects_root``) the resolved revision is then checked out, as AWX does,
        into ``<projects_root>/_<id>__<name slug>`` and the project's ``local_path`` is set to
        that directory: its job templates' jobs run from there (runner.py)."""
        updates = self.updates.setdefault("project_updates", {})
        update = {"id": len(updates) + 1, "type": "project_update", "project": project["id"], "name": project["name"],
                  "launch_type": "manual", "scm_revision": "", "status": "failed", "failed": True,
                  "job_explanation": "", "created": now(), "started": now(), "finished": now()}
        url = project["scm_url"]
        local = url.startswith("file://") or url.startswith("/")
        if project["scm_type"] != "git" or not local:
            update["job_explanation"] = "awxsim: only a git project on this machine (file:// or a path) is updated"
        else:
            ref = project["scm_branch"] or "HEAD"
            out = _git(["ls-remote", url, ref])
            revision = out.stdout.split()[0] if out.returncode == 0 and out.stdout.split() else ""
            if not revision:
                update["job_explanation"] = "git ls-remote found no %s in %s" % (ref, url)
            elif self.projects_root:
                error = self._check_out(project, url, revision)
                if error:
                    update["job_explanation"] = error
                else:
                    update.update(scm_revision=revision, status="successful", failed=False)
            else:
                update.update(scm_revision=revision, status="successful", failed=False)
        updates[update["id"]] = update
        return update

    def _check_out(self, project: dict, url: str, revision: str) -> str:
        """``revision`` of ``url`` into the project's directory under the projects root, afresh
        (AWX's ``scm_clean``/``scm_delete_on_update`` as one: no file of an earlier checkout stays);
        sets ``local_path``. An error message, or "" when done."""
        name = "_%d__%s" % (project["id"], slug(project["name"]))
        path = os.path.join(os.path.realpath(self.projects_root), name)
        if os.path.lexists(path):
            shutil.rmtree(path)
        clone = _git(["clone", "--quiet", "--no-checkout", url, path])
        if clone.returncode != 0:
            return "git clone of %s failed: %s" % (url, clone.stderr.strip()[-500:])
        checkout = _git(["-C", path, "checkout", "--quiet", "--detach", revision])
        if checkout.returncode != 0:
            return "git checkout of %s failed: %s" % (revision, checkout.stderr.strip()[-500:])
        project["local_path"] = name
        return ""

    def delete(self, kind: str, obj: dict) -> None:
        with self.lock:
            self.objects[kind].pop(obj["id"], None)
            self.survey_specs.pop((kind, obj["id"]), None)
            if kind == "job_templates":
                self.jt_credentials.pop(obj["id"], None)
            if kind == "credentials":
                for attached in self.jt_credentials.values():
                    if obj["id"] in attached:
                        attached.remove(obj["id"])
            for (owner, owner_id, relation), attached in list(self.associations.items()):
                if (owner, owner_id) == (kind, obj["id"]):
                    del self.associations[(owner, owner_id, relation)]
                elif ASSOCIATIONS.get((owner, relation)) == kind and obj["id"] in attached:
                    attached.remove(obj["id"])
            if kind == "job_templates":
                for schedule in [s for s in self.objects["schedules"].values() if s["unified_job_template"] == obj["id"]]:
                    self.objects["schedules"].pop(schedule["id"], None)

    def credential_clash(self, credential_ids) -> str | None:
        """AWX's rule: one credential per credential type on a job template or a launch
        (``Credential.unique_hash``; vault ids are not modelled here)."""
        seen = set()
        for cred_id in credential_ids:
            cred = self.objects["credentials"][cred_id]
            if cred["credential_type"] in seen:
                ctype = self.objects["credential_types"][cred["credential_type"]]
                return "Cannot assign multiple %s credentials." % ctype["name"]
            seen.add(cred["credential_type"])
        return None

    def _derive(self, kind, obj):
        """Job templates belong to their project's organization (AWX sets it so)."""
        if kind == "job_templates":
            project = self.objects["projects"].get(obj.get("project"))
            obj["organization"] = project.get("organization") if project else None

    def _check_unique(self, kind, obj):
        scope = UNIQUE_SCOPE.get(kind)
        for other in self.objects[kind].values():
            if other["id"] == obj["id"] or other["name"] != obj["name"]:
                continue
            if scope:
                if other.get(scope) == obj.get(scope):
                    raise errors.fields({"__all__": ["%s with this Name and %s already exists." % (
                        VERBOSE[kind], scope.replace("_", " ").capitalize())]})
                continue
            if kind in ("organizations", "credential_types"):
                raise errors.fields({"name": ["%s with this Name already exists." % VERBOSE[kind]]})
            if other.get("organization") == obj.get("organization") and \
                    other.get("credential_type") == obj.get("credential_type"):
                raise errors.fields({"__all__": [
                    "%s with this Name and Organization already exists." % VERBOSE[kind]]})

    def _check_rules(self, kind, obj, values, before):
        """The checks of AWX's serializers beyond one field's type, for the kinds that have them."""
        if kind == "inventory_sources":
            self._check_inventory_source(obj, values)
        elif kind == "notification_templates":
            self._check_notification(obj, values, before)
        elif kind == "schedules":
            schedules.check(self, obj, values)

    def _check_inventory_source(self, obj, values):
        """AWX ``InventorySourceSerializer.validate`` and ``validate_source_project``."""
        project = self.objects["projects"].get(obj.get("source_project"))
        inventory = self.objects["inventories"].get(obj.get("inventory"))
        if inventory and inventory.get("kind") in ("smart", "constructed"):
            raise errors.fields({"inventory": {"detail": "Cannot create Inventory Source for Smart or Constructed Inventories"}})
        if project is not None and project.get("scm_type") == "":
            raise errors.fields({"source_project": ["Cannot use manual project for SCM-based inventory."]})
        if obj["source"] == "scm":
            if ("source" in values or "source_project" in values) and project is None:
                raise errors.fields({"source_project": ["Project required for scm type sources."]})
        else:
            redundant = [field for field in ("source_project", "source_path", "scm_branch") if values.get(field)]
            if redundant:
                raise errors.detail(400, "Cannot set %s if not SCM type." % " ".join(redundant))
        if obj.get("scm_branch") and project is not None and not project.get("allow_override"):
            raise errors.fields({"scm_branch": ["Project does not allow overriding branch."]})

    @staticmethod
    def _check_notification(obj, values, before):
        """AWX ``NotificationTemplateSerializer.validate`` for the email type (its ``init_parameters``):
        every parameter present (``timeout`` defaults to 30) and of its type, a non-empty recipient
        list; a password given as ``$encrypted$`` keeps the stored one."""
        if "notification_configuration" not in values:
            return
        config = dict(values["notification_configuration"])
        params = NOTIFICATION_PARAMETERS.get(obj["notification_type"])
        if params is None:
            obj["notification_configuration"] = config
            return
        missing, problems, wrong_types, forward = [], [], [], []
        for field, (ftype, default) in params.items():
            if field not in config:
                if default is not None:
                    config[field] = default
                else:
                    missing.append(field)
                continue
            value = config[field]
            expected = {"string": (str,), "password": (str,), "int": (int,), "bool": (bool,), "list": (list,)}[ftype]
            if type(value) not in expected:  # pylint: disable=unidiomatic-typecheck  # AWX compares type() so
                wrong_types.append("Configuration field '%s' incorrect type, expected %s." % (field, ftype))
                continue
            if ftype == "list" and not value:
                problems.append("No values specified for field '%s'" % field)
                continue
            if ftype == "password" and value == ENCRYPTED and before is not None:
                forward.append(field)
        # AWX's order: the loop's own errors, then the missing fields, then the wrong types
        if missing:
            problems.append("Missing required fields for Notification Configuration: %s." % missing)
        problems += wrong_types
        if problems:
            raise errors.fields({"non_field_errors": problems})
        for field in forward:
            config[field] = before["notification_configuration"].get(field, "")
        obj["notification_configuration"] = config

    # ------------------------------------------------------------ validation

    def validate(self, kind: str, data, partial: bool) -> dict:
        """The values of ``data`` for ``kind``; a 400 with every field's errors otherwise.

        Unknown fields are ignored (as DRF does); read-only ones (id, url, created, ...) too.
        """
        if not isinstance(data, dict):
            raise errors.fields({"non_field_errors": [
                "Invalid data. Expected a dictionary, but got %s." % type(data).__name__]})
        problems, values = {}, {}
        for field, (ftype, required, _default) in FIELDS[kind].items():
            if field not in data:
                if required and not partial:
                    problems[field] = ["This field is required."]
                continue
            message, value = self._check_value(ftype, required, data[field])
            if message:
                problems[field] = [message]
            else:
                values[field] = value
        if kind == "credential_types" and "kind" in problems:
            value = data.get("kind")
            if value is not None:
                problems["kind"] = ["Must be 'cloud' or 'net', not %s" % value]
        if problems:
            raise errors.fields(problems)
        return values

    def _check_value(self, ftype, required, value):
        if value is None:
            # AWX's CharNullField/ChoiceNullField/BooleanNullField (awx/api/fields.py): a text or
            # text-choice field takes null as "", a boolean as false; the awx.awx modules send
            # null for every option left unset.
            if isinstance(ftype, str) and ftype.startswith("fk:") and not required:
                return None, None
            if ftype == "bool":
                return None, False
            if ftype in ("str", "text", "vars") or (isinstance(ftype, tuple) and isinstance(ftype[0], str)):
                value = ""
            else:
                return "This field may not be null.", None
        if isinstance(ftype, tuple):
            if value not in ftype or isinstance(value, bool):
                return '"%s" is not a valid choice.' % value, None
            return None, value
        if ftype in ("str", "text"):
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                return "Not a valid string.", None
            value = str(value)
            if ftype == "str" and not value.strip():
                return "This field may not be blank.", None
            if ftype == "str" and len(value) > 512:
                return "Ensure this field has no more than 512 characters.", None
            return None, value
        if ftype == "bool":
            if isinstance(value, bool):
                return None, value
            if value in ("true", "True", "1", 1):
                return None, True
            if value in ("false", "False", "0", 0):
                return None, False
            return "Must be a valid boolean.", None
        if ftype == "int":
            if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).lstrip("-").isdigit():
                return "A valid integer is required.", None
            return None, int(value)
        if ftype == "dict":
            if not isinstance(value, dict):
                return "Must be a valid JSON object.", None
            return None, value
        if ftype == "vars":
            return self._check_vars(value)
        kind = ftype[3:]
        if isinstance(value, bool) or not str(value).isdigit():
            return "Incorrect type. Expected pk value, received %s." % type(value).__name__, None
        if int(value) not in self.objects[kind]:
            return 'Invalid pk "%s" - object does not exist.' % value, None
        return None, int(value)

    @staticmethod
    def _check_vars(value):
        """``extra_vars``/``variables``: a JSON object, or its text as JSON or YAML (stored as text)."""
        if isinstance(value, dict):
            return None, json.dumps(value)
        if not isinstance(value, str):
            return "Must be valid JSON or YAML.", None
        try:
            parsed = parse_vars(value)
        except ValueError:
            return "Must be valid JSON or YAML.", None
        if not isinstance(parsed, dict):
            return "Input type `%s` is not a dictionary" % type(parsed).__name__, None
        return None, value

    # ------------------------------------------------------------ output

    def serialize(self, kind: str, obj: dict) -> dict:
        out = {"id": obj["id"], "type": TYPE_NAMES[kind], "url": "/api/v2/%s/%d/" % (kind, obj["id"])}
        related = {name: "/api/v2/%s/%d/%s/" % (kind, obj["id"], name) for name in RELATED[kind]}
        named = self.named_url(kind, obj)
        if named:
            related["named_url"] = named
        summary = {}
        for field, (ftype, _required, _default) in FIELDS[kind].items():
            if isinstance(ftype, str) and ftype.startswith("fk:") and obj.get(field) is not None:
                target = self.objects[ftype[3:]].get(obj[field])
                related[field] = "/api/v2/%s/%d/" % (ftype[3:], obj[field])
                if target:
                    summary[field] = {"id": target["id"], "name": target["name"],
                                      "description": target["description"]}
        if kind == "job_templates" and obj.get("organization") is not None:
            related["organization"] = "/api/v2/organizations/%d/" % obj["organization"]
            org = self.objects["organizations"].get(obj["organization"])
            if org:
                summary["organization"] = {"id": org["id"], "name": org["name"], "description": org["description"]}
        out["related"] = related
        out["summary_fields"] = summary
        out["created"] = obj["created"]
        out["modified"] = obj["modified"]
        for field in FIELDS[kind]:
            out[field] = copy.deepcopy(obj.get(field))
        if kind == "job_templates":
            out["organization"] = obj.get("organization")
        if kind == "credentials":
            out["inputs"] = self._masked_inputs(obj)
        if kind == "credential_types":
            out["managed"] = False
        if kind == "notification_templates":
            params = NOTIFICATION_PARAMETERS.get(obj["notification_type"], {})
            out["notification_configuration"] = {
                key: (ENCRYPTED if params.get(key, ("",))[0] == "password" and value not in ("", None) else value)
                for key, value in obj["notification_configuration"].items()}
        if kind == "schedules":
            out.update(schedules.computed(obj))
            out["related"]["unified_job_template"] = out["related"].pop("unified_job_template", None)
        if kind == "projects":
            self._project_state(obj, out)
        if kind in ("job_templates", "inventory_sources"):
            for relation in NOTIFY:
                out["related"][relation] = "/api/v2/%s/%d/%s/" % (kind, obj["id"], relation)
        return out

    def _project_state(self, obj, out):
        """A project's last update (AWX: the SCM update a git project gets when it is made or changed)."""
        updates = [u for u in self.updates.get("project_updates", {}).values() if u["project"] == obj["id"]]
        last = updates[-1] if updates else None
        out["scm_revision"] = last["scm_revision"] if last and last["status"] == "successful" else ""
        out["status"] = last["status"] if last else ("ok" if obj["scm_type"] == "" else "never updated")
        if last:
            out["summary_fields"]["current_update" if last["status"] in ("pending", "running") else "last_update"] = {
                "id": last["id"], "name": obj["name"], "status": last["status"], "failed": last["failed"]}
            out["summary_fields"].setdefault("last_update", out["summary_fields"].get("current_update"))

    def _masked_inputs(self, obj):
        ctype = self.objects["credential_types"].get(obj.get("credential_type")) or {}
        secret = {field.get("id") for field in ctype.get("inputs", {}).get("fields", []) if field.get("secret")}
        return {key: ("$encrypted$" if key in secret and value not in ("", None) else value)
                for key, value in obj.get("inputs", {}).items()}


def slug(name: str) -> str:
    """AWX's project directory slug: Django's slugify with ``-`` as ``_`` ("Cloud Pods" -> "cloud_pods")."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text.lower())
    return re.sub(r"[-\s]+", "-", text).strip("-_").replace("-", "_")


def _git(args):
    """git without a terminal prompt and with no configuration of the user's; a failure to start is
    a failed CompletedProcess."""
    env = {"PATH": os.environ.get("PATH", ""), "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
           "HOME": os.environ.get("HOME", "/nonexistent"), "GIT_ALLOW_PROTOCOL": "file"}
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=120, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(args, 1, "", str(exc))
