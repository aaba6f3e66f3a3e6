"""The Flask application factory: ``create_app(settings)``."""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from flask import Flask, g, jsonify, request

from . import grammar, keys, metrics
from .blueprints import admin, customer, lifecycle, public
from .errors import Problem, register_error_handlers
from .logging_setup import install_secret_filter
from .plans import PlanCatalogue
from .repository import Repository, open_pool
from .settings import Settings

PRIVATE_BLUEPRINTS = ("customer", "admin", "lifecycle")
OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.yaml"


@dataclass
class CloudPods:
    """What the blueprints share, kept in ``app.extensions["cloudpods"]``."""

    settings: Settings
    repository: Repository
    plans: PlanCatalogue
    openapi: dict


def load_openapi():
    with open(OPENAPI_FILE, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def create_app(settings=None, repository=None):
    """Build the app; ``settings`` default to the environment (validated), the repository to a pool."""
    settings = settings or Settings.from_env()
    install_secret_filter(settings.secrets())
    if settings.grammar_file is not None:
        grammar.use(settings.grammar_file)
    if settings.ssh_keys_file is not None:
        keys.use(settings.ssh_keys_file)
    app = Flask("runner_api")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    if repository is None:
        repository = Repository(open_pool(settings, name="runner_api-api"))
    app.extensions["cloudpods"] = CloudPods(settings, repository, PlanCatalogue(settings.plans_file), load_openapi())
    register_error_handlers(app)
    app.register_blueprint(public.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(customer.blueprint)
    app.register_blueprint(lifecycle.blueprint)

    @app.before_request
    def _started():
        g.started = time.monotonic()

    @app.after_request
    def _count(response):
        # The route's template, never the path (it names pods); no route matched: "unmatched".
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = g.get("started")
        metrics.observe_request(endpoint, request.method, response.status_code,
                                time.monotonic() - started if started is not None else 0.0)
        return response

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.blueprint in PRIVATE_BLUEPRINTS or "Authorization" in request.headers:
            # Pods, tasks and errors of one customer: no shared or browser cache keeps them.
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True)

    @app.get(metrics.METRICS_PATH)
    def metrics_endpoint():
        """Prometheus' scrape (README, "Metrics"): only with CLOUDPODS_METRICS_TOKEN set, to that bearer token."""
        if settings.metrics_token is None:
            raise Problem(404, "Not Found", "Metrics are off: set CLOUDPODS_METRICS_TOKEN to serve them.",
                          "metrics-off")
        if not metrics.token_matches(request.headers.get("Authorization"), settings.metrics_token):
            raise Problem(401, "Unauthorized", "The metrics need the bearer token CLOUDPODS_METRICS_TOKEN "
                          "(Authorization: Bearer <token>).", "unauthorized")
        body = metrics.api_exposition(repository.pool)
        return body, 200, {"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-store"}

    logging.getLogger(__name__).info("runner_api ready (%r)", settings)
    return app
