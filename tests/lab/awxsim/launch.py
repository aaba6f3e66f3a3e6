"""``/api/v2/job_templates/{id}/launch/`` and ``survey_spec/``: AWX's prompt and survey rules.

- A prompt (``inventory``, ``limit``, ``job_tags`` ...) is applied only when its
  ``ask_<prompt>_on_launch`` is true. An unprompted one is **not** a 400: AWX drops it and
  reports it in ``ignored_fields`` (manual launches exclude ``prompts`` errors).
- ``extra_vars`` are applied whole with ``ask_variables_on_launch``; otherwise only the
  survey's variables are (survey enabled), the others go to ``ignored_fields.extra_vars``
  (except those equal to the template's own). The survey checks the launch's own variables: a
  question's default does not answer a required question; valid defaults are merged after the
  template's extra_vars and before the launch's (AWX ``SurveyJobTemplateMixin``).
- A ``null`` value is a 400; a missing inventory is a 400 ``resources_needed_to_start``;
  survey problems are a 400 ``variables_needed_to_start`` with AWX's messages.
- Success: 201 with ``Location`` and ``{"job": id, "ignored_fields": {...}, ...}``.
"""

from . import errors
from .resources import parse_vars

# launch field -> the ask_*_on_launch flag gating it (docs/prompting.md)
GATES = {
    "extra_vars": "ask_variables_on_launch", "inventory": "ask_inventory_on_launch",
    "credentials": "ask_credential_on_launch", "limit": "ask_limit_on_launch",
    "job_tags": "ask_tags_on_launch", "skip_tags": "ask_skip_tags_on_launch",
    "job_type": "ask_job_type_on_launch", "verbosity": "ask_verbosity_on_launch",
    "diff_mode": "ask_diff_mode_on_launch", "scm_branch": "ask_scm_branch_on_launch",
}
# in the order of AWX SURVEY_TYPE_MAPPING (its message lists them so)
QUESTION_TYPES = ("text", "textarea", "password", "multiplechoice", "multiselect", "integer", "float")


def _choices(question):
    choices = question.get("choices", [])
    if isinstance(choices, str):
        choices = [line for line in choices.split("\n") if line.strip()]
    return choices


def validate_answer(question: dict, answers: dict) -> list:
    """AWX's messages for one survey question against the launch's extra vars."""
    var = question["variable"]
    if var not in answers:
        return ["'%s' value missing" % var] if question.get("required") else []
    value, qtype = answers[var], question.get("type")
    low, high = question.get("min"), question.get("max")
    low = None if low in ("", None) else low
    high = None if high in ("", None) else high
    if qtype in ("text", "textarea", "password"):
        if not isinstance(value, str):
            return ["Value %s for '%s' expected to be a string." % (value, var)]
        found = []
        if low is not None and len(value) < int(low):
            found.append("'%s' value %s is too small (length is %s must be at least %s)." % (var, value, len(value), low))
        if high is not None and len(value) > int(high):
            found.append("'%s' value %s is too large (must be no more than %s)." % (var, value, high))
        return found
    if qtype in ("integer", "float"):
        if qtype == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
            return ["Value %s for '%s' expected to be an integer." % (value, var)]
        if qtype == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            return ["Value %s for '%s' expected to be a numeric type." % (value, var)]
        found = []
        if low is not None and value < low:
            found.append("'%s' value %s is too small (must be at least %s)." % (var, value, low))
        if high is not None and value > high:
            found.append("'%s' value %s is too large (must be no more than %s)." % (var, value, high))
        return found
    choices = _choices(question)
    if qtype == "multiplechoice":
        if value not in choices:
            return ["Value %s for '%s' expected to be one of %s." % (value, var, choices)]
        return []
    if qtype == "multiselect":
        if not isinstance(value, list):
            return ["'%s' value is expected to be a list." % var]
        return ["Value %s for '%s' expected to be one of %s." % (item, var, choices)
                for item in value if item not in choices]
    return []


def check_survey_spec(spec) -> dict:
    """A ``survey_spec`` POST body, or a 400 ``{"error": ...}`` with the message AWX's
    ``JobTemplateSurveySpec`` gives (the last failing top-level check wins, as there)."""
    if not isinstance(spec, dict):
        raise errors.ApiError(400, {"error": "Field 'name' is missing from survey spec."})
    error = None
    for field, kind, label in (("name", str, "string"), ("description", str, "string"), ("spec", list, "list of items")):
        if field not in spec:
            error = "Field '%s' is missing from survey spec." % field
        elif not isinstance(spec[field], kind):
            error = "Expected %s for field '%s', received %s type." % (label, field, type(spec[field]).__name__)
    if isinstance(spec.get("spec"), list) and not spec["spec"]:
        error = "'spec' doesn't contain any items."
    if error:
        raise errors.ApiError(400, {"error": error})
    seen = set()
    for pos, question in enumerate(spec["spec"]):
        if not isinstance(question, dict):
            raise errors.ApiError(400, {"error": "Survey question %d is not a json object." % pos})
        for key in ("type", "question_name", "variable", "required"):
            if key not in question:
                raise errors.ApiError(400, {"error": "'%s' missing from survey question %d" % (key, pos)})
            kind, label = (bool, "boolean") if key == "required" else (str, "string")
            if not isinstance(question[key], kind):
                raise errors.ApiError(400, {"error": "'%s' in survey question %d expected to be %s." % (key, pos, label)})
        if question["variable"] in seen:
            raise errors.ApiError(400, {"error": "'variable' '%s' duplicated in survey question %d." % (question["variable"], pos)})
        seen.add(question["variable"])
        if question["type"] not in QUESTION_TYPES:
            raise errors.ApiError(400, {"error": "'%s' in survey question %d is not one of '%s' allowed question types." % (
                question["type"], pos, ", ".join(QUESTION_TYPES))})
    return spec


def _check_credentials(store, value):
    """A launch's ``credentials``: a list of existing credential ids, one per credential type."""
    if not isinstance(value, list):
        return 'Expected a list of items but got type "%s".' % type(value).__name__
    for cred_id in value:
        if isinstance(cred_id, bool) or not isinstance(cred_id, int) or cred_id not in store.objects["credentials"]:
            return 'Invalid pk "%s" - object does not exist.' % (cred_id,)
    return store.credential_clash(value)


def launch_info(store, jt: dict) -> dict:
    """``GET launch/``: what a launch needs and what it may be asked."""
    survey = store.survey_specs.get(("job_templates", jt["id"])) if jt["survey_enabled"] else None
    # AWX lists every required question, default or not (SurveyJobTemplateMixin)
    needed = [q["variable"] for q in (survey or {}).get("spec", []) if q.get("required")]
    inventory = store.objects["inventories"].get(jt["inventory"])
    info = {
        "can_start_without_user_input": not needed and inventory is not None,
        "passwords_needed_to_start": [],
        "variables_needed_to_start": needed,
        "credential_needed_to_start": False,
        "inventory_needed_to_start": inventory is None,
        "job_template_data": {"name": jt["name"], "id": jt["id"], "description": jt["description"]},
        "survey_enabled": jt["survey_enabled"],
        "defaults": {
            "extra_vars": jt["extra_vars"], "limit": jt["limit"], "job_tags": jt["job_tags"],
            "skip_tags": jt["skip_tags"], "job_type": jt["job_type"], "verbosity": jt["verbosity"],
            "diff_mode": jt["diff_mode"], "scm_branch": jt["scm_branch"],
            "credentials": [{"id": cid, "name": store.objects["credentials"][cid]["name"],
                             "credential_type": store.objects["credentials"][cid]["credential_type"]}
                            for cid in store.jt_credentials.get(jt["id"], []) if cid in store.objects["credentials"]],
            "inventory": {"name": inventory["name"], "id": inventory["id"]} if inventory else {"name": None, "id": None},
        },
    }
    for flag in sorted(set(GATES.values())):
        info[flag] = jt[flag]
    return info


def accept(store, jt: dict, body) -> tuple:
    """``(applied, ignored)`` for a launch body; a 400 ``ApiError`` when AWX refuses it."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise errors.fields({"non_field_errors": ["Invalid data. Expected a dictionary."]})
    problems, applied, ignored = {}, {}, {}
    for field, flag in GATES.items():
        if field not in body:
            continue
        if body[field] is None:
            problems[field] = ["This field may not be null."]
        elif field == "extra_vars":
            continue
        elif jt[flag]:
            applied[field] = body[field]
        else:
            ignored[field] = body[field]
    if "credentials" in applied:
        message = _check_credentials(store, applied["credentials"])
        if message:
            problems["credentials"] = [message]
    if "inventory" in applied:
        message, value = store._check_value("fk:inventories", True, applied["inventory"])  # pylint: disable=protected-access
        if message:
            problems["inventory"] = [message]
        else:
            applied["inventory"] = value
    extra = body.get("extra_vars")
    if extra is not None:
        try:
            extra = parse_vars(extra)
        except ValueError:
            problems["extra_vars"] = ["Must be valid JSON or YAML."]
        if not problems.get("extra_vars") and not isinstance(extra, dict):
            problems["extra_vars"] = ["Must be a valid JSON or YAML dictionary."]
    if problems:
        raise errors.fields(problems)
    # AWX (_accept_or_ignore_variables): the survey checks the launch's own variables (a
    # question's default does not answer a required one); ask_variables_on_launch accepts the
    # rest; leftovers equal to the template's own extra_vars are pruned, the others ignored.
    survey = store.survey_specs.get(("job_templates", jt["id"])) if jt["survey_enabled"] else None
    questions = (survey or {}).get("spec", [])
    extra = dict(extra or {})
    survey_errors, accepted = [], {}
    for question in questions:
        found = validate_answer(question, extra)
        survey_errors.extend(found)
        if found and question["variable"] in extra:
            ignored.setdefault("extra_vars", {})[question["variable"]] = extra.pop(question["variable"])
        elif question["variable"] in extra:
            accepted[question["variable"]] = extra.pop(question["variable"])
    if survey_errors:
        raise errors.ApiError(400, {"variables_needed_to_start": survey_errors})
    template_vars = parse_vars(jt["extra_vars"])
    if jt["ask_variables_on_launch"]:
        accepted.update(extra)
        extra = {}
    extra = {k: v for k, v in extra.items() if not (k in template_vars and template_vars[k] == v)}
    if extra:
        ignored.setdefault("extra_vars", {}).update(extra)
    inventory = applied.get("inventory", jt["inventory"])
    if inventory is None or inventory not in store.objects["inventories"]:
        raise errors.ApiError(400, {"resources_needed_to_start": ["Job Template 'inventory' is missing or undefined."]})
    merged = dict(template_vars)
    for question in questions:  # JT extra_vars, then valid survey defaults, then the launch's
        default = question.get("default")
        if default is not None and not validate_answer(question, {question["variable"]: default}):
            merged[question["variable"]] = default
    merged.update(accepted)
    applied["extra_vars"] = merged
    # what the launch gave is written !unsafe into the job's extra vars (runner.py)
    applied["launch_variables"] = sorted(accepted)
    applied["inventory"] = inventory
    applied.setdefault("credentials", list(store.jt_credentials.get(jt["id"], [])))
    return applied, ignored
