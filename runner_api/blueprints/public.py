"""Public endpoints (the marketing site): the plan catalogue and the API description."""

from flask import Blueprint, current_app, jsonify

from ..errors import Problem

blueprint = Blueprint("public", __name__, url_prefix="/api/cloud-pods")


def _plans():
    return current_app.extensions["cloudpods"].plans


@blueprint.get("/plans")
def list_plans():
    return jsonify(plans=_plans().public_list())


@blueprint.get("/plans/<code>")
def get_plan(code):
    plan = _plans().public(code)
    if plan is None:
        raise Problem(404, "Not Found", f"There is no plan {code!r}.", "unknown-plan")
    return jsonify(plan)


@blueprint.get("/compare")
def compare():
    return jsonify(_plans().comparison())


@blueprint.get("/openapi.json")
def openapi():
    return jsonify(current_app.extensions["cloudpods"].openapi)
