"""A small dataflow over a notebook's names: which objects may each expression be?

The answer is a set of atoms: a path to an importable object (`torch.nn.functional`), a namespace
(`vars(F)`, `sys.modules`, `globals()`), a function, lambda or class of the notebook, a constant string (for
getattr keys built with `+`), or a computed lookup on a torch module (a key not known before run time).
Names, attributes (`self.f = F`), function parameters and return values carry atoms from where they are
set to where they are read, over the whole notebook, until nothing changes. Bindings are flow-insensitive
(a name holds everything ever assigned to it in its scope), so the answer may be too large, never too
small, for the constructs modelled here; calls it does not model may return any of their arguments.
`exec`/`eval` of strings are not read. forbidden.py asks the questions.
"""
import ast
import builtins
import sys

import torch  # noqa: F401 (the modules `import torch` loads are the torch modules the analysis knows)

PRELUDE = {"torch": "torch", "nn": "torch.nn", "F": "torch.nn.functional"}  # what the worker binds before any cell
GETTERS = {"builtins.getattr", "inspect.getattr_static"}
NAMESPACE_GETTERS = {"get", "__getitem__", "pop", "setdefault"}
MAX_ROUNDS, MAX_PATH_PARTS, MAX_STRINGS, MAX_STRING = 25, 8, 16, 200
# The judge's work is bounded: the master notebook needs 66 facts and about 6,000 steps of work.
MAX_ATOMS, MAX_WORK = 20_000, 2_000_000
# Outside torch, only the ways to look things up by name matter (builtins.getattr, importlib.import_module,
# sys.modules, inspect.getattr_static); any other path is a call the analysis does not model anyway.
LOOKUP_MODULES = {"builtins", "importlib", "sys", "inspect"}
GLOBALS = "<globals>"
ANY = "*"  # a binding made under a name the audit cannot read
UNKNOWN_STRING = ("str?", "")
TORCH_MODULES = frozenset(name for name in sys.modules if name == "torch" or name.startswith("torch."))


class NotSettled(Exception):
    pass


def _is_torch_module(path):
    return path in TORCH_MODULES or path.startswith("torch.ops")


def _strings(atoms):
    """The constant strings a value may be, or None when it may be anything else."""
    if atoms and all(a[0] == "str" for a in atoms):
        return sorted(a[1] for a in atoms)
    return None


class _Scope:
    def __init__(self, node, names, is_class=False):
        self.node, self.names, self.is_class = node, names, is_class


def _local_names(function):
    """The names a function (or class body) binds, without those of nested functions and classes."""
    names, declared = set(), set()
    if not isinstance(function, ast.ClassDef):
        arguments = function.args
        names = {a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs}
        names |= {a.arg for a in (arguments.vararg, arguments.kwarg) if a}
    stack = list(function.body) if isinstance(function.body, list) else [function.body]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            stack.extend(node.decorator_list)
            continue
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        if not isinstance(node, ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))
    return names - declared


class Dataflow:
    """Atoms per binding, grown to a fixpoint; then `uses` and `refers` per top-level statement."""

    def __init__(self, trees, names, sealed=()):
        self.trees = trees  # cell index -> ast.Module
        self.names = names  # a torch path through one of these is what the analysis looks for
        self.sealed = set(sealed)  # classes graded on their own: what their methods return flows nowhere
        self.env, self.attrs, self.returns = {}, {}, {}
        self.functions, self.owner_of, self.bases, self.methods, self.unreturned = {}, {}, {}, set(), set()
        self.defined = {n.name for t in trees.values() for n in t.body
                        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        for name, path in PRELUDE.items():
            self.env[(None, name)] = {("path", path)}
        self.env[(None, "__builtins__")] = {("path", "builtins")}
        self.recording, self.size, self.work = False, 0, 0
        self.uses, self.refers = {}, {}  # owner -> [(line, col, node, atom)], owner -> {owner}

    def is_forbidden(self, atom):
        kind, value = atom[0], atom[1]
        return kind == "computed" or (kind == "path" and value.split(".")[0] == "torch"
                                      and not self.names.isdisjoint(value.split(".")[1:]))

    # ---- bindings

    def _followed(self, atom):
        if atom[0] != "path":
            return True
        root, depth = atom[1].split(".")[0], atom[1].count(".")
        return self.is_forbidden(atom) or (root == "torch" and depth < MAX_PATH_PARTS) or \
            (root in LOOKUP_MODULES and depth <= 2)

    def _add(self, table, key, atoms):
        known = table.setdefault(key, set())
        new = atoms - known
        if not new:
            return
        new = {a for a in new if self._followed(a) and not (a[0] == "str" and UNKNOWN_STRING in known)}
        if not new:
            return
        known |= new
        strings = [a for a in known if a[0] == "str"]
        if len(strings) > MAX_STRINGS:  # too many spellings to follow: the binding's strings become unknown
            known.difference_update(strings)
            known.add(UNKNOWN_STRING)
        self.size += len(new)
        if self.size > MAX_ATOMS:
            raise NotSettled(f"more than {MAX_ATOMS} facts about names")
        self.changed = True

    def _key(self, name, ctx):
        scopes = ctx["scopes"]
        for scope in reversed(scopes):
            if scope.is_class and scope is not scopes[-1]:
                continue  # a method does not see its class body's names
            if name in scope.names:
                return (id(scope.node), name)
        return (None, name)

    def _name(self, name, ctx):
        key = self._key(name, ctx)
        atoms = set(self.env.get(key, ()))
        if key[0] is None and hasattr(builtins, name):
            atoms.add(("path", f"builtins.{name}"))
        if not atoms and key[0] is None:
            atoms = set(self.env.get((None, ANY), ()))
        return atoms

    def _bind_name(self, name, atoms, ctx):
        self._add(self.env, self._key(name, ctx), atoms)
        if ctx.get("class_body"):  # a class attribute: self.name in its methods
            self._add(self.attrs, (ctx["class"], name), atoms)

    def _bind(self, target, atoms, ctx):
        if isinstance(target, ast.Name):
            self._bind_name(target.id, atoms, ctx)
        elif isinstance(target, ast.Attribute):
            self._add(self.attrs, (self._attr_owner(target.value, ctx), target.attr), atoms)
            self.expr(target.value, ctx)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._bind(element, atoms, ctx)
        elif isinstance(target, ast.Starred):
            self._bind(target.value, atoms, ctx)
        elif isinstance(target, ast.Subscript):
            self._store_item(target.value, self.strings(target.slice, ctx), atoms, ctx)

    def _store_item(self, base, keys, atoms, ctx):
        for kind, value in self.expr(base, ctx):
            if kind == "namespace":  # globals()[key] = ... sets a name; vars(module)[key] = ... an attribute
                for key in keys or [ANY]:
                    self._add(self.env, (None, key), atoms) if value == GLOBALS else \
                        self._add(self.attrs, (ANY, key), atoms)
        if isinstance(base, (ast.Name, ast.Attribute, ast.Subscript)):  # a list or dict holds its items
            self._bind(base, atoms, ctx)

    def _attr_owner(self, base, ctx):
        """Attributes set on `self` in a class belong to that class; any other base's to everyone."""
        if isinstance(base, ast.Name) and base.id == ctx.get("self"):
            return ctx["class"]
        return ANY

    def _attribute(self, base_atoms, attr):
        atoms = set()
        for kind, value in base_atoms:
            if kind == "path" and self.is_forbidden((kind, value)):
                atoms.add((kind, value))  # torch.nn.MultiheadAttention.forward is still the forbidden class
            elif kind == "path":
                path = f"{value}.{attr}"
                atoms.add(("namespace", value if attr == "__dict__" else path)
                          if attr == "__dict__" or path == "sys.modules" else ("path", path))
                if attr in ("__getattribute__", "__getattr__"):
                    atoms.add(("getter", value))
            elif kind == "namespace":
                atoms.add(("getter", value) if attr in NAMESPACE_GETTERS else ("computed", value))
            elif kind == "computed":
                atoms.add((kind, value))
            elif self._is_class((kind, value)):  # an instance or the class itself: its attributes and methods
                for cls in self._class_chain(self.functions[value].name):
                    atoms |= self.attrs.get((cls, attr), set())
                if attr == "__class__":
                    atoms.add((kind, value))
        # Attributes set on objects the audit cannot name belong to every object.
        atoms = {a for a in atoms if self._followed(a)}
        return atoms | self.attrs.get((ANY, attr), set()) | self.attrs.get((ANY, ANY), set())

    def _is_class(self, atom):
        return atom[0] in ("instance", "function") and isinstance(self.functions.get(atom[1]), ast.ClassDef)

    def _class_chain(self, name):
        """A class and the notebook classes it inherits from (self.x may be set in a base class)."""
        chain, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current not in chain:
                chain.add(current)
                todo += [self.functions[b].name for b in self.bases.get(current, ()) if b in self.functions]
        return chain

    def _lookup(self, objects, keys):
        """obj[key] / getattr(obj, key) for each object; keys None: not known before run time."""
        atoms = set()
        for kind, value in objects:
            if kind == "namespace" and value == GLOBALS:
                atoms |= set().union(*[self.env.get((None, k), set()) for k in keys]) if keys else \
                    {("computed", "globals()")}
            elif kind == "namespace" and value == "sys.modules":
                atoms |= {("path", k) for k in keys} if keys else {("computed", "sys.modules")}
            elif kind in ("path", "namespace"):
                if keys:
                    atoms |= {("path", f"{value}.{k}") for k in keys}
                elif value.split(".")[0] == "torch":
                    atoms.add(("computed", value))
            elif kind == "computed":
                atoms.add((kind, value))
        if keys:
            atoms |= set().union(*[self.attrs.get((ANY, k), set()) for k in keys])
        return atoms

    def strings(self, node, ctx):
        return _strings(self.expr(node, ctx))

    # ---- expressions

    def expr(self, node, ctx):
        if node is None:
            return set()
        atoms = self._expr(node, ctx)
        self.work += 1 + len(atoms)
        if self.work > MAX_WORK:
            raise NotSettled(f"more than {MAX_WORK} steps of work")
        if self.recording and isinstance(node, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)):
            for atom in sorted(a for a in atoms if self.is_forbidden(a)):
                self.uses.setdefault(ctx["owner"], []).append((node.lineno, node.col_offset, node, atom))
            for atom in atoms:
                if atom[0] in ("function", "instance") and atom[1] in self.owner_of:
                    self.refers.setdefault(ctx["owner"], set()).add(self.owner_of[atom[1]])
        return atoms

    def _expr(self, node, ctx):
        if isinstance(node, ast.Name):
            return self._name(node.id, ctx) if isinstance(node.ctx, ast.Load) else set()
        if isinstance(node, ast.Constant):
            return {("str", node.value)} if isinstance(node.value, str) and len(node.value) <= MAX_STRING else set()
        if isinstance(node, ast.Attribute):
            return self._attribute(self.expr(node.value, ctx), node.attr)
        if isinstance(node, ast.Subscript):
            keys = self.strings(node.slice, ctx)
            objects = self.expr(node.value, ctx)
            spaces = {a for a in objects if a[0] in ("namespace", "computed")}
            spaces |= {("namespace", a[1]) for a in objects if a[0] == "path" and a[1] in ("sys.modules", "builtins")}
            # Anything else subscripted is a list or dict: an item is whatever it holds.
            items = {a for a in objects if a[0] in ("path", "function", "instance")
                     and a[1] not in ("sys.modules", "builtins")}
            return self._lookup(spaces, keys) | items
        if isinstance(node, ast.Call):
            return self._call(node, ctx)
        if isinstance(node, ast.BinOp):
            left, right = self.expr(node.left, ctx), self.expr(node.right, ctx)
            if isinstance(node.op, ast.Add) and left and right and all(a[0] == "str" for a in left | right):
                if len(left) * len(right) > MAX_STRINGS:
                    return {UNKNOWN_STRING}
                return {("str", a[1] + b[1]) for a in left for b in right if len(a[1] + b[1]) <= MAX_STRING}
            return {a for a in left | right if a[0] != "str"}
        if isinstance(node, ast.JoinedStr):
            pieces = [self.strings(v.value, ctx) if isinstance(v, ast.FormattedValue) else [v.value]
                      for v in node.values]
            if all(p is not None and len(p) == 1 and not (isinstance(v, ast.FormattedValue) and v.format_spec)
                   for p, v in zip(pieces, node.values)):
                return {("str", "".join(p[0] for p in pieces))}
            return set()
        if isinstance(node, ast.Lambda):
            self._function(node, ctx)
            return {("function", id(node))}
        if isinstance(node, ast.NamedExpr):
            atoms = self.expr(node.value, ctx)
            self._bind(node.target, atoms, ctx)
            return atoms
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for generator in node.generators:
                self._bind(generator.target, self._iterate(self.expr(generator.iter, ctx)), ctx)
                for condition in generator.ifs:
                    self.expr(condition, ctx)
            if isinstance(node, ast.DictComp):
                self.expr(node.key, ctx)
                return self.expr(node.value, ctx)
            return self.expr(node.elt, ctx)
        # Containers, conditionals, operators: whatever their parts may be.
        atoms = set()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                atoms |= self.expr(child, ctx)
        if isinstance(node, (ast.Compare, ast.UnaryOp)):
            return set()
        return {a for a in atoms if a[0] != "str"} if not isinstance(node, ast.IfExp) else atoms

    def _iterate(self, atoms):
        """What iterating over a value gives: a namespace's contents are anything in it."""
        return {("computed", a[1]) if a[0] == "namespace" and (a[1] != GLOBALS) else a for a in atoms}

    def _call(self, node, ctx):
        callees = self.expr(node.func, ctx)
        args = [self.expr(a, ctx) for a in node.args]
        keywords = {k.arg: self.expr(k.value, ctx) for k in node.keywords}
        every_arg = set().union(*args, *keywords.values())
        key = (lambda i: _strings(args[i]) if len(args) > i else None)
        result, unmodelled = set(), False
        for kind, value in callees:
            if kind == "path" and value in GETTERS and len(args) >= 2:
                result |= self._lookup(args[0], key(1))
            elif kind == "path" and value == "builtins.vars":
                result |= {("namespace", a[1]) for a in (args[0] if args else ()) if a[0] == "path"} or \
                    ({("namespace", GLOBALS)} if not args else set())
            elif kind == "path" and value in ("builtins.globals", "builtins.locals"):
                result.add(("namespace", GLOBALS))
            elif kind == "path" and value == "builtins.setattr" and len(args) == 3:
                for attr in key(1) or [ANY]:
                    self._add(self.attrs, (self._attr_owner(node.args[0], ctx), attr), args[2])
            elif kind == "path" and value in ("builtins.__import__", "importlib.import_module"):
                names = key(0)
                result |= {("path", n) for n in names} | {("path", n.split(".")[0]) for n in names} if names \
                    else {("computed", value)}
            elif kind == "getter":
                result |= self._lookup({("namespace", value)}, key(0)) if len(args) == 1 else \
                    self._lookup(args[0] if args else set(), key(1))
            elif kind in ("function", "instance"):
                # Building an instance runs __init__; calling one runs __call__ (forward, for a module).
                methods = {"function": ("__init__",), "instance": ("__call__", "forward")}[kind] \
                    if self._is_class((kind, value)) else ()
                for function in {a[1] for m in methods for a in self._attribute({(kind, value)}, m)
                                 if a[0] == "function"} | ({value} if kind == "function" else set()):
                    self._pass_arguments(function, args, keywords, ctx)
                    if (kind == "instance" or function == value) and function not in self.unreturned:
                        result |= self.returns.get(function, set())
                if kind == "function" and self._is_class((kind, value)):
                    result.add(("instance", value))
            elif not (kind == "path" and value.split(".")[0] == "torch"):  # torch's own functions give tensors
                unmodelled = True
        if unmodelled or not callees:  # a call the audit does not model may give back what it was given
            result |= self._passed_through(every_arg)
        return result

    def _passed_through(self, atoms):
        """What a call the audit does not model may return: any of its arguments, or anything in a module."""
        through = set()
        for kind, value in atoms:
            if kind == "path" and _is_torch_module(value) or kind == "namespace" and value.split(".")[0] == "torch":
                through.add(("computed", value))
            elif kind in ("function", "instance", "computed") or self.is_forbidden((kind, value)):
                through.add((kind, value))
        return through

    def _pass_arguments(self, function_id, args, keywords, ctx):
        function = self.functions.get(function_id)
        if function is None or isinstance(function, ast.ClassDef):
            return
        arguments = function.args
        params = [a.arg for a in arguments.posonlyargs + arguments.args]
        scope = id(function)
        # A method called on an instance gets self first, on its class not: bind both ways for methods.
        for shift in (0, 1) if function_id in self.methods else (0,):
            for i, atoms in enumerate(args):
                if i + shift < len(params):
                    self._add(self.env, (scope, params[i + shift]), atoms)
                elif arguments.vararg:
                    self._add(self.env, (scope, arguments.vararg.arg), atoms)
        for name, atoms in keywords.items():
            if name in params or name in {a.arg for a in arguments.kwonlyargs}:
                self._add(self.env, (scope, name), atoms)
            elif arguments.kwarg:
                self._add(self.env, (scope, arguments.kwarg.arg), atoms)

    # ---- statements

    def _function(self, node, ctx):
        self.functions[id(node)] = node
        self.owner_of[id(node)] = ctx["owner"]
        scope = _Scope(node, _local_names(node))
        inner = {**ctx, "scopes": ctx["scopes"] + [scope], "class_body": False}
        if ctx.get("class_body"):
            self.methods.add(id(node))
            if ctx["class"] in self.sealed:
                self.unreturned.add(id(node))
        if ctx.get("class_body") and node.args.args:
            inner["self"] = node.args.args[0].arg
            self._add(self.env, (id(node), inner["self"]), {("instance", ctx["class_id"])})
        arguments = node.args
        positional = arguments.posonlyargs + arguments.args
        defaults = list(zip(positional[len(positional) - len(arguments.defaults):], arguments.defaults))
        for param, default in defaults + list(zip(arguments.kwonlyargs, arguments.kw_defaults)):
            if default is not None:  # a default is what the parameter holds when the call leaves it out
                self._add(self.env, (id(node), param.arg), self.expr(default, ctx))
        if isinstance(node, ast.Lambda):
            self._add(self.returns, id(node), self.expr(node.body, inner))
        else:
            for decorator in node.decorator_list:
                self.expr(decorator, ctx)
            self.block(node.body, inner, returns=id(node))

    def block(self, statements, ctx, returns=None):
        for statement in statements:
            self.statement(statement, ctx, returns)

    def statement(self, node, ctx, returns=None):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._function(node, ctx)
            self._bind_name(node.name, {("function", id(node))}, ctx)
        elif isinstance(node, ast.ClassDef):
            self.functions[id(node)] = node
            self.owner_of[id(node)] = ctx["owner"]
            for expression in [k.value for k in node.keywords] + node.decorator_list:
                self.expr(expression, ctx)
            self.bases[node.name] = {a[1] for b in node.bases for a in self.expr(b, ctx) if a[0] == "function"}
            body = {**ctx, "class": node.name, "class_id": id(node), "class_body": True,
                    "scopes": ctx["scopes"] + [_Scope(node, _local_names(node), is_class=True)]}
            self.block(node.body, body)
            self._bind_name(node.name, {("function", id(node))}, ctx)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                path = alias.name if alias.asname else alias.name.split(".")[0]
                self._bind_name(alias.asname or path, {("path", path)}, ctx)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if alias.name == "*":
                    if node.module.split(".")[0] == "torch":
                        for name in sorted(self.names - self.defined):
                            self._bind_name(name, {("path", f"{node.module}.{name}")}, ctx)
                else:
                    self._bind_name(alias.asname or alias.name, {("path", f"{node.module}.{alias.name}")}, ctx)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            atoms = self.expr(node.value, ctx)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                self._bind(target, atoms, ctx)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self._bind(node.target, self._iterate(self.expr(node.iter, ctx)), ctx)
            self.block(node.body + node.orelse, ctx, returns)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                atoms = self.expr(item.context_expr, ctx)
                if item.optional_vars is not None:
                    self._bind(item.optional_vars, atoms, ctx)
            self.block(node.body, ctx, returns)
        elif isinstance(node, ast.Return):
            atoms = self.expr(node.value, ctx)
            if returns is not None:
                self._add(self.returns, returns, atoms)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child, ctx)
                elif isinstance(child, ast.stmt):
                    self.statement(child, ctx, returns)
                elif isinstance(child, (ast.ExceptHandler, ast.match_case)):
                    self.expr(getattr(child, "type", None), ctx)
                    self.block(child.body, ctx, returns)

    def run(self):
        for _ in range(MAX_ROUNDS):
            self.changed = False
            self._walk()
            if not self.changed:
                self.recording = True
                self._walk()
                return self
        raise NotSettled(f"the names did not settle in {MAX_ROUNDS} rounds")

    def _walk(self):
        for index, tree in self.trees.items():
            for position, node in enumerate(tree.body):
                self.statement(node, {"owner": (index, position), "scopes": [], "class": None})
