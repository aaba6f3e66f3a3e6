"""Sub-resources and read-only lists the awx.awx modules use beyond the plain objects.

- Association sub-lists (AWX ``SubListAttachDetachAPIView``): ``/groups/<id>/hosts/`` and
  ``/job_templates/<id>/notification_templates_started|success|error/`` (the same on inventory
  sources). GET lists, ``{"id"}`` attaches (204), ``{"id", "disassociate": true}`` detaches (204).
- ``/job_templates/<id>/schedules/``: the template's schedules; POST makes one for it.
- ``/projects/<id>/update/`` and ``/inventory_sources/<id>/update/``: GET ``{"can_update"}``,
  POST 202 with the update (a project update is done at once, resources.Store.project_update; an
  inventory update is recorded ``pending``: nothing syncs inventories in the stand-in).
- ``/unified_job_templates/`` (the job templates: the only launchable kind with schedules here),
  ``/project_updates/<id>/`` and ``/inventory_updates/<id>/``.
"""

from . import errors
from .errors import ApiError
from .resources import ASSOCIATIONS, now

TOP = ("unified_job_templates", "project_updates", "inventory_updates")


def handles(kind, relation) -> bool:
    return (kind, relation) in ASSOCIATIONS or (kind, relation) in (
        ("job_templates", "schedules"), ("projects", "update"), ("inventory_sources", "update"),
        ("projects", "project_updates"), ("inventory_sources", "inventory_updates"))


def top(app, method, name, rest, user, query):
    """The read-only lists: ``unified_job_templates`` and the update records."""
    if method not in ("GET", "HEAD"):
        raise errors.detail(405, 'Method "%s" not allowed.' % method)
    store = app.store
    if name == "unified_job_templates" and not rest:
        items = [jt for jt in store.objects["job_templates"].values() if app.can_see(user, "job_templates", jt)]
        items = app.filter({"id", "name", "organization", "type"}, items, query)
        return 200, app.paginate([store.serialize("job_templates", jt) for jt in items],
                                 "/api/v2/unified_job_templates/", query), {}
    updates = store.updates.get(name, {})
    if len(rest) == 1 and rest[0].isdigit() and int(rest[0]) in updates:
        return 200, _update_json(name, updates[int(rest[0])]), {}
    raise errors.detail(404, errors.NOT_FOUND)


def _update_json(name, update):
    return dict(update, url="/api/v2/%s/%d/" % (name, update["id"]))


def sub(app, method, kind, obj, relation, user, query, body):
    store = app.store
    if relation == "schedules":
        return _schedules(app, method, obj, user, query, body)
    if relation in ("update", "project_updates", "inventory_updates"):
        return _update(app, method, kind, obj, relation, query)
    target = ASSOCIATIONS[(kind, relation)]
    attached = store.associations.setdefault((kind, obj["id"], relation), [])
    table = store.objects[target]
    path = "/api/v2/%s/%d/%s/" % (kind, obj["id"], relation)
    if method in ("GET", "HEAD"):
        items = [table[oid] for oid in attached if oid in table]
        return 200, app.paginate([store.serialize(target, item) for item in items], path, query), {}
    if method != "POST":
        raise errors.detail(405, 'Method "%s" not allowed.' % method)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid type for post data")
    sub_id = body.get("id")
    if sub_id is not None and (not isinstance(sub_id, int) or isinstance(sub_id, bool)):
        raise ApiError(400, {"msg": '"id" field must be an integer.'})
    if not sub_id:
        raise ApiError(400, {"msg": '"id" is required to disassociate' if "disassociate" in body else '"id" is required'})
    if sub_id not in table:
        raise errors.detail(400, "%s matching query does not exist." % _model_name(target))
    if not app.can_see(user, target, table[sub_id]):
        raise errors.detail(403, errors.PERMISSION_DENIED)
    with store.lock:
        if "disassociate" in body:
            if sub_id in attached:
                attached.remove(sub_id)
        elif sub_id not in attached:
            if target == "hosts" and table[sub_id]["inventory"] != obj["inventory"]:
                raise ApiError(400, {"msg": "Cannot associate host with a group of another inventory."})
            attached.append(sub_id)
    return 204, None, {}


def _model_name(kind):
    return {"hosts": "Host", "groups": "Group", "notification_templates": "NotificationTemplate"}[kind]


def _schedules(app, method, jt, user, query, body):
    store = app.store
    if method in ("GET", "HEAD"):
        items = [s for s in store.objects["schedules"].values() if s["unified_job_template"] == jt["id"]]
        items = app.filter({"id", "name", "enabled"}, items, query)
        return 200, app.paginate([store.serialize("schedules", item) for item in items],
                                 "/api/v2/job_templates/%d/schedules/" % jt["id"], query), {}
    if method != "POST":
        raise errors.detail(405, 'Method "%s" not allowed.' % method)
    if not user["is_superuser"] and not app.can_see(user, "job_templates", jt):
        raise errors.detail(403, errors.PERMISSION_DENIED)
    data = dict(body if isinstance(body, dict) else {}, unified_job_template=jt["id"])
    schedule = store.create("schedules", data)
    out = store.serialize("schedules", schedule)
    return 201, out, {"Location": out["url"]}


def _update(app, method, kind, obj, relation, query):
    store = app.store
    name = "project_updates" if kind == "projects" else "inventory_updates"
    if relation != "update":
        if method not in ("GET", "HEAD"):
            raise errors.detail(405, 'Method "%s" not allowed.' % method)
        owner = "project" if kind == "projects" else "inventory_source"
        items = [_update_json(name, u) for u in store.updates.get(name, {}).values() if u[owner] == obj["id"]]
        return 200, app.paginate(items, "/api/v2/%s/%d/%s/" % (kind, obj["id"], relation), query), {}
    if method in ("GET", "HEAD"):
        return 200, {"can_update": kind == "inventory_sources" or bool(obj["scm_type"])}, {}
    if method != "POST":
        raise errors.detail(405, 'Method "%s" not allowed.' % method)
    with store.lock:
        if kind == "projects":
            if not obj["scm_type"]:
                raise errors.detail(405, 'Method "POST" not allowed.')
            update = store.project_update(obj)
        else:
            updates = store.updates.setdefault(name, {})
            update = {"id": len(updates) + 1, "type": "inventory_update", "inventory_source": obj["id"],
                      "inventory": obj["inventory"], "name": obj["name"], "launch_type": "manual",
                      "status": "pending", "failed": False, "job_explanation": "", "created": now(),
                      "started": None, "finished": None}
            updates[update["id"]] = update
    data = _update_json(name, update)
    data[name[:-1]] = update["id"]
    return 202, data, {"Location": data["url"]}
