"""Workflow packages: a module tree's files, its content hash, and loading one version of it.

A **package** is the set of files of one or more top-level workflow modules (Python sources
plus any data files listed when it is built). Its **version** is the sha-256 over its sorted
relative paths and their contents (64 hex digits): the same files are the same version on every
machine, whatever their timestamps. Packages travel as zip archives (:meth:`Package.archive`).

:class:`PackageLoader` imports one version of a package into a namespace of its own,
``aion_pkg_<hash[:16]>``, so two versions of the same modules live side by side in one process
and never see each other: the package's absolute imports of its own top-level modules are
rewritten (at compile time, with the real file names kept for tracebacks) to that namespace;
relative imports work unchanged. Modules a package imports from elsewhere (``aion``, the
standard library, installed libraries) are shared, as usual. Not rewritten: imports by a
string at run time (``importlib.import_module("mypkg.x")``) — they find the unversioned copy.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import shutil
import sys
import threading
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import CodeType, ModuleType

from aion_common.domain import InvalidInput

__all__ = [
    "DEFAULT_PACKAGE_LIMIT",
    "Package",
    "PackageError",
    "PackageLoader",
    "build_package",
    "declared_workflows",
    "module_path",
    "namespace_of",
    "package_of_modules",
    "user_modules",
]

DEFAULT_PACKAGE_LIMIT = 2 * 1024 * 1024
"""Largest package archive accepted (bytes, compressed)."""

_SKIP_DIRS = frozenset({"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"})


class PackageError(InvalidInput):
    """A package that cannot be built or loaded; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class Package:
    """The files of a package (relative POSIX path -> bytes) and its top-level modules."""

    files: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        for path, _ in self.files:
            pure = PurePosixPath(path)
            if pure.is_absolute() or ".." in pure.parts or not path or "\\" in path:
                raise PackageError(f"package path {path!r} is not a plain relative path")

    @property
    def version(self) -> str:
        """The content hash: sha-256 over the sorted paths and their bytes (64 hex)."""
        digest = hashlib.sha256()
        for path, data in sorted(self.files):
            name = path.encode("utf-8")
            digest.update(len(name).to_bytes(4, "big") + name)
            digest.update(len(data).to_bytes(8, "big") + data)
        return digest.hexdigest()

    @property
    def top_level(self) -> tuple[str, ...]:
        """The importable top-level module names (``greetings`` for ``greetings.py`` or
        ``greetings/__init__.py``)."""
        paths = {path for path, _ in self.files}
        names = set()
        for path in paths:
            parts = PurePosixPath(path).parts
            if len(parts) == 1 and parts[0].endswith(".py"):
                names.add(parts[0][:-3])
            elif len(parts) > 1 and f"{parts[0]}/__init__.py" in paths:
                names.add(parts[0])
        return tuple(sorted(n for n in names if n.isidentifier()))

    def archive(self) -> bytes:
        """The files as a deflated zip (what the packages topic carries)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path, data in sorted(self.files):
                info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
        return buffer.getvalue()

    @classmethod
    def from_archive(cls, data: bytes, *, limit: int = DEFAULT_PACKAGE_LIMIT) -> Package:
        """The package a zip holds; :class:`PackageError` if it is not a valid one."""
        if len(data) > limit:
            raise PackageError(f"package archive of {len(data)} bytes exceeds {limit} bytes")
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                total = sum(info.file_size for info in archive.infolist())
                if total > limit * 20:
                    raise PackageError(f"package unpacks to {total} bytes: too large")
                files = tuple((i.filename, archive.read(i)) for i in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise PackageError(f"not a package archive: {err}") from err
        return cls(files)


def _is_source_or_data(path: Path, include: Sequence[str], root: Path) -> bool:
    if path.suffix == ".py":
        return True
    relative = path.relative_to(root).as_posix()
    return any(PurePosixPath(relative).match(pattern) for pattern in include)


def build_package(path: Path, *, include: Sequence[str] = ()) -> Package:
    """The package of ``path``: a module file (``greetings.py``), a package directory
    (``greetings/`` with an ``__init__.py``), or a project directory (every top-level module
    and package in it). ``include`` adds data files by glob (relative to the directory the
    modules sit in). Raises :class:`PackageError` naming what is wrong."""
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".py":
            raise PackageError(f"{path} is not a Python module (.py)")
        return Package(((path.name, path.read_bytes()),))
    if not path.is_dir():
        raise PackageError(f"{path} does not exist")
    root, members = _members(path)
    found: dict[str, Path] = {}
    for member in members:
        candidates = [member] if member.is_file() else sorted(_walk(member))
        for candidate in candidates:
            if _is_source_or_data(candidate, include, root):
                found[candidate.relative_to(root).as_posix()] = candidate
    for pattern in include:  # data files beside the modules too (``--include "data/*.json"``)
        for candidate in sorted(path.glob(pattern)):
            if candidate.is_file() and not _SKIP_DIRS & set(candidate.parts):
                found.setdefault(candidate.relative_to(root).as_posix(), candidate)
    files = [(name, found[name].read_bytes()) for name in sorted(found)]
    if not any(name.endswith(".py") for name, _ in files):
        raise PackageError(f"{path} holds no Python module")
    return Package(tuple(files))


def _members(path: Path) -> tuple[Path, list[Path]]:
    """The directory paths in a package are relative to, and the top-level modules in it."""
    if (path / "__init__.py").is_file():
        return path.parent, [path]
    members = [
        p
        for p in sorted(path.iterdir())
        if (p.suffix == ".py" and p.is_file()) or (p / "__init__.py").is_file()
    ]
    return path, members


def _walk(directory: Path) -> Iterable[Path]:
    for entry in directory.iterdir():
        if entry.is_dir():
            if entry.name not in _SKIP_DIRS:
                yield from _walk(entry)
        elif entry.is_file():
            yield entry


def declared_workflows(package: Package) -> dict[str, str]:
    """The workflow types a package declares (type -> ``file:line``), read from its source
    without running it: every ``@workflow.defn``, ``@workflow.defn("name")`` or
    ``@workflow.defn(name="name")`` (also spelled ``aion.workflow.defn``). What the API
    checks an upload against, as it never imports uploaded code.

    Raises :class:`PackageError` for a source that does not parse (with its file and line),
    a type named twice, and a name that is not a string literal (an engine could not know it
    without running the code)."""
    found: dict[str, str] = {}
    for path, data in sorted(package.files):
        if not path.endswith(".py"):
            continue
        try:
            tree = ast.parse(data, filename=path)
        except SyntaxError as err:
            raise PackageError(f"{path}:{err.lineno}: syntax error: {err.msg}") from err
        except ValueError as err:  # null bytes
            raise PackageError(f"{path}: not Python source: {err}") from err
        for node in ast.walk(tree):
            if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                name = _workflow_name(decorator, node.name, f"{path}:{decorator.lineno}")
                if name is None:
                    continue
                where = f"{path}:{node.lineno}"
                if name in found:
                    raise PackageError(
                        f"workflow type {name!r} is defined twice: at {found[name]} and {where}"
                    )
                found[name] = where
    return found


def _workflow_name(decorator: ast.expr, function: str, where: str) -> str | None:
    call = decorator if isinstance(decorator, ast.Call) else None
    target = call.func if call is not None else decorator
    if not _is_workflow_defn(target):
        return None
    if call is None:
        return function
    arguments = [*call.args, *(k.value for k in call.keywords if k.arg == "name")]
    if not arguments:
        return function
    value = arguments[0]
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value
    raise PackageError(
        f"{where}: a workflow type's name must be a string literal in a deployed package"
    )


def _is_workflow_defn(target: ast.expr) -> bool:
    return (
        isinstance(target, ast.Attribute)
        and target.attr == "defn"
        and isinstance(target.value, ast.Name | ast.Attribute)
        and (target.value.id if isinstance(target.value, ast.Name) else target.value.attr)
        == "workflow"
    )


def module_path(name: str) -> Path:
    """Where an importable module's files are: its file, or its package's directory."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as err:
        raise PackageError(f"module {name!r} is not importable from here: {err}") from err
    if spec is None:
        raise PackageError(f"module {name!r} is not importable from here (check PYTHONPATH)")
    if spec.origin is None:
        raise PackageError(
            f"{name!r} is a namespace package (a directory without __init__.py): add one to "
            "make it a package that can be versioned"
        )
    origin = Path(spec.origin)
    if spec.submodule_search_locations:
        return origin.parent
    return origin


def user_modules(names: Iterable[str]) -> list[str]:
    """``names`` without aion's own modules (``aion``, ``aion_engine.examples``…): those are
    installed code, not a package of the user's to version."""
    return [
        n for n in names if (top := n.partition(".")[0]) != "aion" and not top.startswith("aion_")
    ]


def package_of_modules(names: Iterable[str], *, include: Sequence[str] = ()) -> Package:
    """The package of the top-level modules that ``names`` (dotted, importable) belong to:
    what ``aion deploy`` of their directory builds, so an engine started with
    ``--workflows examples.order`` knows its own code as the same version as the package
    deployed from ``examples/``. aion's own modules are left out (:func:`user_modules`)."""
    tops = sorted({name.partition(".")[0] for name in user_modules(names)})
    files = {
        path: data
        for top in tops
        for path, data in build_package(module_path(top), include=include).files
    }
    if not files:
        raise PackageError("no workflow module named")
    return Package(tuple(sorted(files.items())))


def namespace_of(version: str) -> str:
    """The top-level module name a package version is loaded under."""
    return f"aion_pkg_{version[:16]}"


class _Rewriter(ast.NodeTransformer):
    """Absolute imports of the package's own top-level modules → its version namespace."""

    def __init__(self, namespace: str, names: frozenset[str]) -> None:
        self._ns = namespace
        self._names = names

    def _own(self, dotted: str | None) -> bool:
        return dotted is not None and dotted.split(".", 1)[0] in self._names

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.level == 0 and self._own(node.module):
            node.module = f"{self._ns}.{node.module}"
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST | list[ast.stmt]:
        if not any(self._own(alias.name) for alias in node.names):
            return node
        statements: list[ast.stmt] = []
        for alias in node.names:
            if not self._own(alias.name):
                statements.append(ast.Import(names=[alias]))
            elif alias.asname is not None or "." not in alias.name:
                bound = alias.asname or alias.name
                statements.append(
                    ast.Import(names=[ast.alias(name=f"{self._ns}.{alias.name}", asname=bound)])
                )
            else:  # `import pkg.sub` binds `pkg`: import the versioned one, then bind its top
                top = alias.name.split(".", 1)[0]
                statements.append(ast.Import(names=[ast.alias(name=f"{self._ns}.{alias.name}")]))
                statements.append(
                    ast.parse(
                        f"{top} = __import__({f'{self._ns}.{top}'!r}, fromlist=('__name__',))"
                    ).body[0]
                )
        for statement in statements:
            ast.copy_location(statement, node)
            ast.fix_missing_locations(statement)
        return statements


class _VersionLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, rewriter: _Rewriter) -> None:
        super().__init__(fullname, path)
        self._rewriter = rewriter

    def source_to_code(  # type: ignore[override]  # typeshed's signature is looser
        self, data: bytes, path: str, *, _optimize: int = -1
    ) -> CodeType:
        tree = ast.parse(data, filename=path)
        tree = ast.fix_missing_locations(self._rewriter.visit(tree))
        return compile(tree, path, "exec", dont_inherit=True)

    def get_code(self, fullname: str) -> CodeType | None:
        # never the bytecode cache: it holds the unrewritten code of the same path
        source = self.get_data(self.get_filename(fullname))
        return self.source_to_code(source, self.get_filename(fullname))


class _VersionFinder(importlib.abc.MetaPathFinder):
    def __init__(self, namespace: str, root: Path, names: frozenset[str]) -> None:
        self._ns = namespace
        self._root = root
        self._rewriter = _Rewriter(namespace, names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == self._ns:
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = [str(self._root)]
            return spec
        if not fullname.startswith(self._ns + "."):
            return None
        relative = Path(*fullname[len(self._ns) + 1 :].split("."))
        package = self._root / relative / "__init__.py"
        module = (self._root / relative).with_suffix(".py")
        for candidate, is_package in ((package, True), (module, False)):
            if candidate.is_file():
                loader = _VersionLoader(fullname, str(candidate), self._rewriter)
                return importlib.util.spec_from_file_location(
                    fullname,
                    candidate,
                    loader=loader,
                    submodule_search_locations=[str(candidate.parent)] if is_package else None,
                )
        return None


class PackageLoader:
    """Loads package versions, each under its own namespace, from files unpacked under
    ``directory`` (one sub-directory per version). Thread-safe; a version loads once."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._loaded: dict[str, list[ModuleType]] = {}

    def load(self, package: Package) -> list[ModuleType]:
        """Import the modules of ``package`` that declare workflows — every module when none
        does so visibly — (once per version); returns them. Errors in the
        package's code (a syntax error, a failing import) raise :class:`PackageError` with the
        file, line and cause, and leave nothing of that version behind."""
        version = package.version
        with self._lock:
            if version in self._loaded:
                return self._loaded[version]
            namespace = namespace_of(version)
            root = self._unpack(package, version)
            finder = _VersionFinder(namespace, root, frozenset(package.top_level))
            sys.meta_path.insert(0, finder)
            try:
                modules = self._import_all(package, namespace)
            except BaseException:
                sys.meta_path.remove(finder)
                for name in [
                    n for n in sys.modules if n == namespace or n.startswith(namespace + ".")
                ]:
                    del sys.modules[name]
                raise
            self._loaded[version] = modules
            return modules

    def loaded(self) -> tuple[str, ...]:
        """The versions loaded so far."""
        with self._lock:
            return tuple(sorted(self._loaded))

    def _unpack(self, package: Package, version: str) -> Path:
        root = self._directory / version
        if not (root / ".complete").exists():
            partial = self._directory / f".{version}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            for path, data in package.files:
                target = partial / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            (partial / ".complete").write_text(version, encoding="ascii")
            shutil.rmtree(root, ignore_errors=True)
            partial.rename(root)
        return root

    @staticmethod
    def _import_all(package: Package, namespace: str) -> list[ModuleType]:
        # the modules that declare workflows (and what they import), not every file: a
        # project's tests or scripts need not import where the workflows run
        declaring = {where.rpartition(":")[0] for where in declared_workflows(package).values()}
        names: list[str] = []
        for path, _ in sorted(package.files):
            if declaring and path not in declaring:
                continue
            pure = PurePosixPath(path)
            if pure.suffix != ".py" or not all(
                p.isidentifier() for p in pure.with_suffix("").parts
            ):
                continue
            parts = list(pure.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts and parts[0] in package.top_level:
                names.append(".".join([namespace, *parts]))
        modules: list[ModuleType] = []
        for name in names:
            try:
                modules.append(importlib.import_module(name))
            except SyntaxError as err:
                where = f"{Path(err.filename or '?').name}, line {err.lineno}"
                raise PackageError(f"syntax error in {where}: {err.msg}") from err
            except Exception as err:
                raise PackageError(
                    f"importing {name.removeprefix(namespace + '.')} failed: "
                    f"{type(err).__name__}: {err}"
                ) from err
        return modules
