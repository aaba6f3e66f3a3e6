"""AWX API v2 stand-in for the lab (issue 14 part 5), built like ``pvesim``.

A real AWX cannot run in the lab (no container images, no receptor), so this package answers
the part of AWX's API v2 the collection's AWX material and AWX's own clients (awxkit's ``awx``
CLI, the ``awx.awx`` collection) use: OAuth2 bearer tokens, the root, ping and me, organizations,
projects, inventories, credential types, credentials and job templates (list with AWX's
pagination, create with DRF field errors, detail by id or named URL, PATCH, DELETE) and the
job template launch rules. Written from AWX's documented behaviour (``../shared/FACTS.md``
part B); no AWX code is in here. ``README.md`` says what is done and what is not.

Modules: ``errors`` (the error answers), ``resources`` (the objects, their fields and
validation, named URLs), ``launch`` (prompts and surveys), ``server`` (HTTP, auth, routing,
pagination, ``/_lab`` control), ``jobs`` (jobs, cancel). Standard library and PyYAML
(variables text is JSON or YAML, as in AWX).
"""
