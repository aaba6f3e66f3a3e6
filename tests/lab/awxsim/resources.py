"""The objects: organizations, projects, inventories, credential types, credentials, job templates.

Each kind has a field table (what a create or PATCH may set, its type, whether it is required,
its default) and validation that answers as DRF does: ``{"field": ["message"]}`` with a 400.
Named URLs (AWX ``docs/named_url.md``): ``<name>`` for organizations, ``<name>+<kind>`` for
credential types, ``<name>++<organization name>`` for projects, inventories and job templates;
in a name, ``+`` is written ``[+]`` and the URL reserved characters are percent-encoded.
"""

import copy
import datetime
import json
import threading
from urllib.parse import quote, unquote

import yaml

from . import errors

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
    },
    "inventories": {
        "name": ("str", True, None), "description": ("text", False, ""),
        "organization": ("fk:organizations", True, None), "variables": ("vars", False, ""),
        "kind": (("", "smart", "constructed"), False, ""),
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
}

TYPE_NAMES = {
    "organizations": "organization", "projects": "project", "inventories": "inventory",
    "credential_types": "credential_type", "credentials": "credential", "job_templates": "job_template",
}
VERBOSE = {
    "organizations": "Organization", "projects": "Project", "inventories": "Inventory",
    "credential_types": "Credential type", "credentials": "Credential", "job_templates": "Job template",
}
# only the sub-resources the stand-in serves (jobs, credentials lists: STATUS.md, next)
RELATED = {
    "organizations": (), "projects": (), "inventories": (), "credential_types": (), "credentials": (),
    "job_templates": ("launch", "survey_spec", "credentials"),
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

    def __init__(self):
        self.lock = threading.RLock()
        self.objects = {kind: {} for kind in FIELDS}
        self.survey_specs = {}
        self.jt_credentials = {}  # job template id -> credential ids, in attach order
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
            self._check_unique(kind, obj)
            self.objects[kind][obj["id"]] = obj
            self.next_id[kind] += 1
            return obj

    def update(self, kind: str, obj: dict, data) -> dict:
        with self.lock:
            values = self.validate(kind, data, partial=True)
            candidate = dict(obj, **values)
            self._derive(kind, candidate)
            self._check_unique(kind, candidate)
            obj.update(candidate, modified=now())
            return obj

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
        for other in self.objects[kind].values():
            if other["id"] == obj["id"] or other["name"] != obj["name"]:
                continue
            if kind in ("organizations", "credential_types"):
                raise errors.fields({"name": ["%s with this Name already exists." % VERBOSE[kind]]})
            if other.get("organization") == obj.get("organization") and \
                    other.get("credential_type") == obj.get("credential_type"):
                raise errors.fields({"__all__": [
                    "%s with this Name and Organization already exists." % VERBOSE[kind]]})

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
        return out

    def _masked_inputs(self, obj):
        ctype = self.objects["credential_types"].get(obj.get("credential_type")) or {}
        secret = {field.get("id") for field in ctype.get("inputs", {}).get("fields", []) if field.get("secret")}
        return {key: ("$encrypted$" if key in secret and value not in ("", None) else value)
                for key, value in obj.get("inputs", {}).items()}
