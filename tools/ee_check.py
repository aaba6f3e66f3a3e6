"""Checks the execution environment (execution-environment.yml) against the code: tools/ee-check.

1. `ansible-builder create` writes the build context of execution-environment.yml into a temporary
   directory (it pulls nothing) and must succeed; the context's requirements must be the EE's files.
2. `ansible-builder introspect --sanitize` reads the Python requirements of this collection
   (meta/execution-environment.yml) and of the collections the EE installs (meta/ee-collections.yml,
   from the ones installed in the venv), plus the EE's own Python file (--user-pip).
3. Every Python import of plugins/** (and of roles' library/, module_utils/ and *_plugins/, if any)
   and of the plugins of other collections the playbooks and roles name (with the module_utils of
   their collection they import), parsed with ast, that is neither the standard library, ansible nor a relative import, must be
   covered: the distribution that provides it (this venv's installed metadata) is in what introspect
   found. An import nothing here provides is uncovered too.
4. Every collection the playbooks and roles name (namespace.name.plugin of a collection installed
   here) besides ansible.builtin and this one is in meta/ee-collections.yml.
Scripts a role copies into the pods (roles/*/files, templates) run there, not in the EE: not checked.
Exit status 1 with one line per problem; 0 with a summary.
"""

import argparse
import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_THIRD_PARTY = {'ansible', 'ansible_collections', '__future__'}
ROLE_CODE_DIRS = re.compile(r'^roles/[^/]+/(library|module_utils|[a-z_]+_plugins)/')
FQCN = re.compile(r'\b([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b')


def python_files(root):
    """The controller-side Python of the collection: plugins/** and roles' plugin directories."""
    for top in ('plugins', 'roles'):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                if name.endswith('.py') and (top == 'plugins' or ROLE_CODE_DIRS.match(rel)):
                    yield rel


def file_imports(path):
    """(module name, line) of every absolute import of a Python file, nested ones (try/except) included."""
    with open(path, encoding='utf-8') as handle:
        tree = ast.parse(handle.read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno
            for alias in node.names:  # from ansible_collections.x.y.plugins.module_utils import z
                yield '%s.%s' % (node.module, alias.name), node.lineno


def collection_module_file(module):
    """The file of ansible_collections.<ns>.<name>.plugins.module_utils.<...> where installed, or None."""
    parts = module.split('.')
    if len(parts) < 6 or parts[0] != 'ansible_collections' or parts[3:5] != ['plugins', 'module_utils']:
        return None
    base = installed_collection('%s.%s' % (parts[1], parts[2]))
    if base is None:
        return None
    path = os.path.join(base, *parts[3:])
    for candidate in (path + '.py', os.path.join(path, '__init__.py')):
        if os.path.isfile(candidate):
            return candidate
    return None


def third_party_imports(root, extra_files=()):
    """{top-level module: [file:line, ...]} of every absolute import that is neither stdlib nor ansible,
    in the collection's plugins and in extra_files (plugins of other collections), following the
    module_utils of other collections they import."""
    found = {}
    todo = [(os.path.join(root, rel), rel) for rel in python_files(root)] + [(p, p) for p in extra_files]
    seen = set()
    while todo:
        path, label = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        for name, line in file_imports(path):
            top = name.split('.')[0]
            if top == 'ansible_collections':
                dep = collection_module_file(name)
                if dep is not None and not os.path.realpath(dep).startswith(os.path.realpath(root) + os.sep):
                    todo.append((dep, dep))
                continue
            if top in sys.stdlib_module_names or top in NOT_THIRD_PARTY:
                continue
            where = found.setdefault(top, [])
            if '%s:%d' % (label, line) not in where:
                where.append('%s:%d' % (label, line))
    return found


def requirement_names(lines):
    """Canonical distribution names of requirement lines (comments, options and blanks skipped)."""
    names = set()
    for line in lines:
        line = line.split('#', 1)[0].strip()
        if not line or line.startswith('-'):
            continue
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            names.add(canonicalize_name(re.split(r'[<>=!~;\[ ]', line, maxsplit=1)[0]))
    return names


def load_yaml(path):
    with open(path, encoding='utf-8') as handle:
        return yaml.safe_load(handle) or {}


def ee_files(root, ee_file):
    """The EE definition and the paths (absolute) of its Python and Galaxy requirement files."""
    ee_def = load_yaml(ee_file)
    deps = ee_def.get('dependencies') or {}
    here = os.path.dirname(os.path.abspath(ee_file))
    python = os.path.join(here, deps['python']) if isinstance(deps.get('python'), str) else None
    galaxy = os.path.join(here, deps['galaxy']) if isinstance(deps.get('galaxy'), str) else None
    return ee_def, python, galaxy


def run(cmd, problems, what):
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        problems.append('%s failed (rc %d): %s' % (what, proc.returncode, (proc.stderr or proc.stdout).strip()[-2000:]))
        return None
    return proc.stdout


def galaxy_collections(galaxy):
    if not galaxy:
        return []
    data = load_yaml(galaxy)
    items = data.get('collections', []) if isinstance(data, dict) else data
    return [item['name'] if isinstance(item, dict) else str(item) for item in items]


def installed_collection(name):
    """Where this venv's ansible package (or ANSIBLE_COLLECTIONS_PATH) has the collection, or None."""
    namespace, coll = name.split('.', 1)
    roots = [p for p in os.environ.get('ANSIBLE_COLLECTIONS_PATH', '').split(os.pathsep) if p]
    try:
        import ansible_collections  # pylint: disable=import-outside-toplevel
        roots += [os.path.dirname(p) for p in ansible_collections.__path__]
    except ImportError:
        pass
    for base in roots:
        path = os.path.join(base, 'ansible_collections', namespace, coll)
        if os.path.isfile(os.path.join(path, 'MANIFEST.json')) or os.path.isfile(os.path.join(path, 'galaxy.yml')):
            return path
    return None


def introspect(root, python, collections, problems):
    """The Python requirement names introspect finds for this collection, the EE's and its collections."""
    with tempfile.TemporaryDirectory(prefix='ee-introspect-') as tmp:
        galaxy = load_yaml(os.path.join(root, 'galaxy.yml'))
        own = os.path.join(tmp, 'ansible_collections', galaxy['namespace'], galaxy['name'])
        os.makedirs(os.path.dirname(own))
        os.symlink(os.path.abspath(root), own)
        for name in collections:
            path = installed_collection(name)
            if path is None:
                print('ee-check: %s is not installed here: its own requirements are not introspected' % name)
                continue
            link = os.path.join(tmp, 'ansible_collections', *name.split('.', 1))
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(path, link)
        cmd = ['ansible-builder', 'introspect', '--sanitize', tmp]
        if python:
            cmd[3:3] = ['--user-pip', python]
        out = run(cmd, problems, 'ansible-builder introspect')
    if out is None:
        return set()
    data = yaml.safe_load(out[out.index('---'):]) if '---' in out else {}
    return requirement_names((data or {}).get('python') or [])


def build_context(ee_file, python, collections, problems):
    """ansible-builder create into a temporary directory; its requirement files must be the EE's."""
    with tempfile.TemporaryDirectory(prefix='ee-create-') as tmp:
        context = os.path.join(tmp, 'context')
        if run(['ansible-builder', 'create', '-f', ee_file, '-c', context], problems, 'ansible-builder create') is None:
            return
        build = os.path.join(context, '_build')
        if not any(os.path.isfile(os.path.join(context, n)) for n in ('Containerfile', 'Dockerfile')):
            problems.append('ansible-builder create wrote no Containerfile/Dockerfile in %s' % context)
        if python:
            with open(python, encoding='utf-8') as want, open(os.path.join(build, 'requirements.txt'), encoding='utf-8') as got:
                if want.read() != got.read():
                    problems.append('the build context requirements.txt is not %s' % python)
        if collections:
            got = galaxy_collections(os.path.join(build, 'requirements.yml'))
            if sorted(got) != sorted(collections):
                problems.append('the build context requirements.yml lists %s, not %s' % (got, collections))


def used_plugins(root):
    """{collection: {fqcn: first file naming it}} of the collections installed here that the playbooks
    and roles name, besides ansible.builtin and this one."""
    galaxy = load_yaml(os.path.join(root, 'galaxy.yml'))
    own = '%s.%s' % (galaxy['namespace'], galaxy['name'])
    found = {}
    for top in ('playbooks', 'roles'):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.endswith(('.yml', '.yaml', '.j2')):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding='utf-8') as handle:
                    text = handle.read()
                for match in FQCN.finditer(text):
                    coll = '%s.%s' % match.groups()[:2]
                    if coll in (own, 'ansible.builtin') or installed_collection(coll) is None:
                        continue
                    found.setdefault(coll, {}).setdefault(match.group(0), os.path.relpath(path, root))
    return found


def plugin_files(plugins):
    """The files of the plugins (modules, connection, lookup, ...) the code names, where installed."""
    files = []
    for coll, names in sorted(plugins.items()):
        base = installed_collection(coll)
        for fqcn in sorted(names):
            short = fqcn.rsplit('.', 1)[1]
            for kind in sorted(os.listdir(os.path.join(base, 'plugins'))):
                candidate = os.path.join(base, 'plugins', kind, short + '.py')
                if kind != 'module_utils' and os.path.isfile(candidate):
                    files.append(candidate)
    return files


def distributions_of(module, packages):
    return [canonicalize_name(d) for d in packages.get(module, [])]


def check(root=ROOT, ee_file=None):
    """The problems found (a list of lines); empty when the EE covers the code."""
    ee_file = ee_file or os.path.join(root, 'execution-environment.yml')
    problems = []
    ee_def, python, galaxy = ee_files(root, ee_file)
    if ee_def.get('version') != 3:
        problems.append('%s: version must be 3 (ansible-builder schema 3), not %r' % (ee_file, ee_def.get('version')))
    if python is None:
        problems.append('%s declares no Python requirements file (dependencies.python)' % ee_file)
    meta = os.path.join(root, 'meta', 'execution-environment.yml')
    if os.path.isfile(meta):  # collection metadata: its paths are relative to the collection root
        meta_python = (load_yaml(meta).get('dependencies') or {}).get('python')
        if not meta_python or python is None or \
                os.path.realpath(os.path.join(root, meta_python)) != os.path.realpath(python):
            problems.append('%s: dependencies.python (%s, from the collection root) is not the Python requirements '
                            'file of %s (%s)' % (meta, meta_python, ee_file, python))
    collections = galaxy_collections(galaxy)
    build_context(ee_file, python, collections, problems)
    covered = introspect(root, python, collections, problems)
    packages = importlib.metadata.packages_distributions()
    plugins = used_plugins(root)
    imports = third_party_imports(root, plugin_files(plugins))
    for module, where in sorted(imports.items()):
        dists = distributions_of(module, packages)
        if not dists:
            problems.append('import %s (%s): no installed distribution provides it, and the execution environment '
                            'does not declare it' % (module, ', '.join(where)))
        elif not covered.intersection(dists):
            problems.append('import %s (%s): its distribution %s is not in the execution environment\'s Python '
                            'requirements' % (module, ', '.join(where), '/'.join(dists)))
    for coll, names in sorted(plugins.items()):
        where = ', '.join('%s in %s' % item for item in sorted(names.items()))
        if coll not in collections:
            problems.append('collection %s (%s) is not in the execution environment\'s Galaxy requirements %s'
                            % (coll, where, galaxy))
    if not problems:
        print('ee-check: ansible-builder create and introspect pass; %d third-party imports covered (%s); '
              'collections: %s' % (len(imports), ', '.join(sorted(imports)), ', '.join(collections) or 'none'))
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--root', default=ROOT, help='the collection (repository) root')
    parser.add_argument('-f', '--file', help='the EE definition (default: <root>/execution-environment.yml)')
    args = parser.parse_args(argv)
    problems = check(args.root, args.file)
    for line in problems:
        print('ee-check: %s' % line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
