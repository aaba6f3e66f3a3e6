"""Schedules: the ``rrule`` checks and the prompts a schedule may carry, as AWX makes them.

``check_rrule`` follows AWX's ``SchedulePreviewSerializer.validate_rrule`` (awx/api/serializers.py):
a ``DTSTART`` with a time zone (``DTSTART:YYYYMMDDTHHMMSSZ`` or ``DTSTART;TZID=Zone:YYYYMMDDTHHMMSS``;
a naive one is refused), exactly one of it, at least one ``RRULE:``, no ``EXDATE``/``RDATE``, each
rule with ``INTERVAL``, no ``SECONDLY``, no numeric ``BYDAY`` prefix, not both ``COUNT`` and
``UNTIL``, ``COUNT`` at most 999. AWX then parses the whole value with dateutil; the stand-in
parses the rule's parts itself (``FREQ`` one of dateutil's, ``INTERVAL`` a positive integer,
known part names) and answers the same 400 ``{"rrule": [messages]}``.

``check`` also applies AWX's ``LaunchConfigurationBaseSerializer.validate``: a prompt field
(job_type, limit, ...) that differs from the template's value needs the template's
``ask_<field>_on_launch`` (else ``Field is not configured to prompt on launch.``), ``extra_data``
needs ``ask_variables_on_launch`` or a survey that asks for those variables, and the survey's
rules apply to the variables given (``variables_needed_to_start``).

``next_run`` is computed for a UTC ``DTSTART`` and ``MINUTELY``, ``HOURLY`` and ``DAILY`` rules without ``BY*`` parts
(what the tests use); other rules read ``next_run`` null (documented in tests/lab/README.md).
"""

import datetime
import re

from . import errors

FREQS = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY")
RULE_PARTS = ("FREQ", "INTERVAL", "COUNT", "UNTIL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY", "BYMONTHDAY",
              "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST")
# schedule field -> the template's ask_*_on_launch flag (AWX JobTemplate.get_ask_mapping)
PROMPTS = {"inventory": "ask_inventory_on_launch", "scm_branch": "ask_scm_branch_on_launch",
           "job_type": "ask_job_type_on_launch", "job_tags": "ask_tags_on_launch",
           "skip_tags": "ask_skip_tags_on_launch", "limit": "ask_limit_on_launch",
           "diff_mode": "ask_diff_mode_on_launch", "verbosity": "ask_verbosity_on_launch"}
STEP = {"MINUTELY": datetime.timedelta(minutes=1), "HOURLY": datetime.timedelta(hours=1),
        "DAILY": datetime.timedelta(days=1)}


def check_rrule(value: str) -> list:
    """AWX's messages for an rrule; ``[]`` when it is acceptable."""
    found = []
    dtstarts = re.findall(r".*?(DTSTART(;[^:]+)?\:[0-9]+T[0-9]+Z?)", value)
    naive = re.findall(r".*?(DTSTART:[0-9]+T[0-9]+) ", value)
    rules = re.findall(r".*?(RULE\:[^\s]*)", value)
    if not dtstarts:
        found.append("Valid DTSTART required in rrule. Value should start with: DTSTART:YYYYMMDDTHHMMSSZ")
    if naive:
        found.append("DTSTART cannot be a naive datetime.  Specify ;TZINFO= or YYYYMMDDTHHMMSSZZ.")
    if len(dtstarts) > 1:
        found.append("Multiple DTSTART is not supported.")
    if "rrule:" not in value.lower():
        found.append("One or more rule required in rrule.")
    if "exdate:" in value.lower():
        return ["EXDATE not allowed in rrule."]
    if "rdate:" in value.lower():
        return ["RDATE not allowed in rrule."]
    for rule in rules:
        if "interval" not in rule.lower():
            found.append("INTERVAL required in rrule: %s" % rule)
        elif "secondly" in rule.lower():
            found.append("SECONDLY is not supported: %s" % rule)
        if re.match(r".*?BYDAY[\:\=][0-9]+[a-zA-Z]{2}", rule):
            found.append("BYDAY with numeric prefix not supported: %s" % rule)
        if "COUNT" in rule and "UNTIL" in rule:
            found.append("RRULE may not contain both COUNT and UNTIL: %s" % rule)
        count = re.match(r".*?(COUNT\=[0-9]+)", rule)
        if count and int(count.groups()[0].split("=")[1]) > 999:
            found.append("COUNT > 999 is unsupported: %s" % rule)
    problem = _parse_problem(value)
    if problem:
        found.append("rrule parsing failed validation: %s" % problem)
    return found


def _parse_problem(value):
    """What dateutil's rrulestr would object to, for the parts the stand-in knows."""
    for line in value.split():
        name, _sep, body = line.partition(":")
        if name.upper().startswith("DTSTART"):
            if not re.fullmatch(r"DTSTART(;TZID=[^:]+)?:[0-9]{8}T[0-9]{6}Z?", line):
                return "unknown string format: %s" % line
            continue
        if name.upper() != "RRULE":
            return "unsupported property %s" % name
        parts = dict(item.partition("=")[::2] for item in body.split(";") if item)
        for part in parts:
            if part.upper() not in RULE_PARTS:
                return "unknown parameter name"
        if parts.get("FREQ", "").upper() not in FREQS:
            return "invalid frequency"
        interval = parts.get("INTERVAL", "1")
        if not interval.isdigit() or int(interval) < 1:
            return "invalid literal for int() with base 10: '%s'" % interval
    return None


def _dtstart(value):
    """The DTSTART of an rrule as an aware datetime (UTC or ``TZID=UTC``), None otherwise."""
    match = re.search(r"DTSTART(?:;TZID=([^:]+))?:([0-9]{8}T[0-9]{6})(Z?)", value)
    if not match:
        return None
    zone, stamp, zulu = match.groups()
    try:
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%S")
    except ValueError:
        return None
    if zulu or (zone or "").upper() in ("UTC", "ETC/UTC"):
        return when.replace(tzinfo=datetime.timezone.utc)
    return None  # naive, or a zone the stand-in does not convert: no dtstart/next_run computed


def computed(obj) -> dict:
    """The read-only fields AWX computes from the rrule: dtstart, dtend, next_run, timezone, until."""
    start = _dtstart(obj["rrule"])
    rule = dict(item.partition("=")[::2] for item in obj["rrule"].split("RRULE:")[-1].split(";") if item)
    next_run = None
    step = STEP.get(rule.get("FREQ", "").upper())
    if start and step and obj["enabled"] and not any(key.startswith("BY") for key in rule) \
            and "COUNT" not in rule and "UNTIL" not in rule:
        step *= int(rule.get("INTERVAL", "1"))
        now = datetime.datetime.now(datetime.timezone.utc)
        when = start
        if when < now:
            when += step * (-(-(now - when) // step))
        next_run = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    zone = re.search(r"TZID=([^:;]+)", obj["rrule"])
    return {"dtstart": start.strftime("%Y-%m-%dT%H:%M:%SZ") if start else None, "dtend": None,
            "next_run": next_run, "timezone": zone.group(1) if zone else "UTC", "until": ""}


def check(store, obj, values) -> None:
    """A schedule about to be saved: its rrule, then its prompts against the template."""
    if "rrule" in values:
        found = check_rrule(obj["rrule"])
        if found:
            raise errors.fields({"rrule": found})
    from . import launch  # pylint: disable=import-outside-toplevel  # launch imports resources, which imports this
    jt = store.objects["job_templates"].get(obj["unified_job_template"])
    if jt is None or not (set(PROMPTS) | {"extra_data", "unified_job_template"}) & set(values):
        return
    problems = {}
    for field, ask in PROMPTS.items():
        value = obj.get(field)
        if value is None or value == jt.get(field):
            continue
        if not jt.get(ask):
            problems[field] = ["Field is not configured to prompt on launch."]
    data = obj.get("extra_data") or {}
    spec = store.survey_specs.get(("job_templates", jt["id"])) if jt.get("survey_enabled") else None
    asked = {question["variable"] for question in (spec or {}).get("spec", [])}
    survey_problems = []
    for question in (spec or {}).get("spec", []):
        survey_problems += launch.validate_answer(question, data)
    if survey_problems:
        problems["variables_needed_to_start"] = survey_problems
    rest = [key for key in data if key not in asked]
    if rest and not jt.get("ask_variables_on_launch"):
        problems["extra_data"] = ["Variables %s are not allowed on launch. Check the Prompt on Launch setting on the "
                                  "Job Template to include Extra Variables." % ", ".join(str(key) for key in rest)]
    if problems:
        raise errors.fields(problems)
