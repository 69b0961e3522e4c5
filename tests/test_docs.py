"""The documentation cannot rot: every command, snippet and link of
README.md, BENCHMARKS.md and docs/*.md is checked against the code.

Shell commands (fenced ``sh``, ``bash``, ``console`` blocks):
  * ``im2txt-*`` and ``python -m MODULE``: the tool exists, the documented
    flags parse with its own flag definitions (a renamed flag or a bad enum
    value fails), ``--help`` runs, ``--set`` names real config fields;
  * ``make TARGET [VAR=value]``: ``make -n`` succeeds, the variables are
    the Makefile's, and the ``python -m`` commands it would run are checked
    as above;
  * ``pip install -e ".[EXTRA]"``: the extras are setup.py's; any other
    program must be in ``OTHER_PROGRAMS``;
  * repository paths in arguments (``experiments/...``) exist.
Python blocks compile, their imports and the module attributes they use
exist, and blocks after ``<!-- docs-test: run -->`` run. JSON blocks parse;
after ``<!-- docs-test: config -->`` / ``suite -->`` they are a valid
experiment config / comparison suite. Relative links point at files.

Nothing heavy runs: the tools' flag parsing and ``--help`` run in forked
children of one worker process that imports TensorFlow once (this file
run as a script), so the whole file takes seconds.
"""

import ast
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

from conftest import console_scripts, setup_argument

REPO = pathlib.Path(__file__).resolve().parents[1]

DOCS = [REPO / "README.md", REPO / "BENCHMARKS.md",
        *sorted((REPO / "docs").glob("*.md"))]
README_LIMIT = 12_000  # Bytes: a front page read in five minutes.
SHELL_LANGUAGES = ("sh", "bash", "console", "shell")
MARKER = re.compile(r"<!--\s*docs-test:\s*(\w+)\s*-->")
# Programs the guides may use without a check of their own.
OTHER_PROGRAMS = {"cd", "git", "curl", "saved_model_cli", "tensorboard",
                  "ls", "mkdir", "cp", "ln", "unzip", "nvidia-smi"}
# Modules run with python -m that are not the library's absl tools.
PLAIN_MODULES = {"pip", "pytest"}
# Argument values starting so are paths in the repository, which must exist.
REPO_FOLDERS = ("experiments/", "docs/", "benchmarks/", "tests/",
                "im2txt_ext/", "attention/", "embeddings/", ".ci/")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclasses.dataclass
class Block:
  path: pathlib.Path
  line: int  # Of the opening fence, 1-based.
  language: str
  text: str
  marker: str  # From a <!-- docs-test: X --> line just before, or "".

  @property
  def where(self):
    return f"{self.path.relative_to(REPO)}:{self.line}"


def fenced_blocks(path):
  """The fenced code blocks of a Markdown file."""
  blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
  i = 0
  while i < len(lines):
    match = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
    if not match:
      i += 1
      continue
    fence, start = match.group(1), i
    previous = next((l for l in reversed(lines[:i]) if l.strip()), "")
    marker = MARKER.search(previous)
    i += 1
    body = []
    while i < len(lines) and not lines[i].strip().startswith(fence):
      body.append(lines[i])
      i += 1
    blocks.append(Block(path, start + 1, match.group(2).lower(),
                        "\n".join(body) + "\n",
                        marker.group(1) if marker else ""))
    i += 1
  return blocks


BLOCKS = [block for path in DOCS for block in fenced_blocks(path)]


def _strip_comment(line):
  """A shell line less its comment (a # after a blank, outside quotes)."""
  quote = None
  for i, char in enumerate(line):
    if quote:
      if char == quote:
        quote = None
    elif char in "'\"":
      quote = char
    elif char == "#" and (i == 0 or line[i - 1] in " \t"):
      return line[:i]
  return line


def logical_lines(text, console=False):
  """Shell lines with continuations joined; in a console block only the
  lines after a "$ " prompt (the rest is output)."""
  out, current, continuing = [], "", False
  for raw in text.splitlines():
    if console and not continuing:
      if not raw.startswith("$ "):
        continue
      raw = raw[2:]
    line = _strip_comment(raw).rstrip()
    continuing = line.endswith("\\")
    current += line[:-1] + " " if continuing else line
    if not continuing:
      if current.strip():
        out.append(current.strip())
      current = ""
  return out


def split_words(line):
  lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  lexer.commenters = ""
  return list(lexer)


def simple_commands(line):
  """The argv of each command of a shell line (split at && ; | ...), less
  leading VAR=value environment assignments."""
  commands, current = [], []
  for word in split_words(line) + [";"]:
    if word in SEPARATORS:
      while current and ENV_ASSIGNMENT.match(current[0]):
        current.pop(0)
      if current:
        commands.append(current)
      current = []
    else:
      current.append(word)
  return commands


def makefile_variables():
  text = (REPO / "Makefile").read_text(encoding="utf-8")
  return set(re.findall(r"\$\((\w+)\)", text)) | set(
      re.findall(r"^(\w+)\s*[?:]?=", text, re.M))


SCRIPTS = console_scripts()
EXTRAS = set(setup_argument("extras_require", {}))


# ---------------------------------------------------------------------------
# Turning the documented commands into checks.


@dataclasses.dataclass
class Command:
  where: str  # file:line of the block.
  text: str  # The command as documented.
  problems: list = dataclasses.field(default_factory=list)  # Found here.
  jobs: list = dataclasses.field(default_factory=list)  # For the worker.


def _extras_problems(extras):
  unknown = set(filter(None, extras.split(","))) - EXTRAS
  return [f"unknown extras {sorted(unknown)} (setup.py: "
          f"{sorted(EXTRAS)})"] if unknown else []


def _path_problems(args):
  problems = []
  for arg in args:
    value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg \
        else arg
    if value.startswith(REPO_FOLDERS) and not (REPO / value).exists():
      problems.append(f"no such file in the repository: {value}")
  return problems


def module_exists(name):
  """Whether a module can be found; the repository's own are looked up as
  files, so that nothing (TensorFlow) is imported here."""
  path = REPO.joinpath(*name.split("."))
  if (REPO / name.split(".")[0]).is_dir() or \
      (REPO / f"{name.split('.')[0]}.py").is_file():
    return path.with_suffix(".py").is_file() or (
        path / "__init__.py").is_file()
  return importlib.util.find_spec(name) is not None


def _python_jobs(argv, origin):
  """Checks of ``python ...`` (argv without the interpreter): problems and
  worker jobs."""
  if argv[:1] == ["-c"] and len(argv) > 1:
    return [], [{"kind": "run", "code": argv[1], "where": origin}]
  if argv[:1] != ["-m"] or len(argv) < 2:
    return [f"only python -m MODULE or python -c CODE are checked: "
            f"{shlex.join(argv)}"], []
  module, args = argv[1], argv[2:]
  if not module_exists(module):
    return [f"no module {module}"], []
  if module in PLAIN_MODULES:
    return (_pip_problems(["pip"] + args) if module == "pip" else []), []
  target = {"module": module, "prog": f"python -m {module}"}
  return _path_problems(args), [dict(kind="help", target=target),
                                dict(kind="parse", target=target, args=args)]


def _pip_problems(argv):
  problems = []
  for arg in argv[1:]:
    match = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
    if match:
      problems += _extras_problems(match.group(1))
  return problems


def _make_checks(argv):
  """``make TARGET VAR=value``: a dry run, its variables, and the python
  commands it would run."""
  targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
  assignments = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
  problems = []
  known = makefile_variables()
  for assignment in assignments:
    name, value = assignment.split("=", 1)
    if name not in known:
      problems.append(f"the Makefile has no variable {name}")
    if name == "EXTRAS":
      problems += _extras_problems(value)
  env = {k: v for k, v in os.environ.items()
         if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
  result = subprocess.run(["make", "-n", "-C", str(REPO), *targets,
                           *assignments], capture_output=True, text=True,
                          env=env, timeout=60)
  if result.returncode != 0:
    return problems + [f"make -n failed: {result.stderr.strip()[-500:]}"], []
  jobs = []
  for line in logical_lines(result.stdout):
    for command in simple_commands(line):
      if re.fullmatch(r"(.*/)?python[\d.]*", command[0]):
        more_problems, more_jobs = _python_jobs(command[1:],
                                                f"make -n: {line}")
        problems += [f"{p} (from `make -n`: {line})" for p in more_problems]
        jobs += more_jobs
  return problems, jobs


def check_command(where, argv):
  """A Command with the problems found here and the worker's jobs."""
  command = Command(where, shlex.join(argv))
  program, args = argv[0], argv[1:]
  if program in SCRIPTS:
    module, function = SCRIPTS[program]
    target = {"module": module, "function": function, "prog": program}
    command.problems += _path_problems(args)
    command.jobs += [dict(kind="help", target=target),
                     dict(kind="parse", target=target, args=args)]
  elif program.startswith("im2txt-"):
    command.problems.append(f"{program} is not a console script of setup.py")
  elif re.fullmatch(r"python[\d.]*", program):
    problems, jobs = _python_jobs(args, where)
    command.problems += problems
    command.jobs += jobs
  elif program == "make":
    problems, jobs = _make_checks(argv)
    command.problems += problems
    command.jobs += jobs
  elif program == "pip":
    command.problems += _pip_problems(argv)
  elif program not in OTHER_PROGRAMS:
    command.problems.append(f"unknown program {program!r}: add a check for "
                            "it, or add it to OTHER_PROGRAMS")
  return command


def shell_commands():
  """(where, argv) of every documented shell command."""
  out = []
  for block in BLOCKS:
    if block.language in SHELL_LANGUAGES:
      for line in logical_lines(block.text, block.language == "console"):
        out += [(block.where, argv) for argv in simple_commands(line)]
  return out


# ---------------------------------------------------------------------------
# The worker: one process that imports TensorFlow once, then forks a child
# per job (absl flags are global, so each tool needs a process of its own).


class _Parsed(Exception):
  """Raised by the stand-in for absl.app.run once the flags are parsed."""


def _main_call(module_name):
  """How ``python -m module`` starts, read from its source: ("app.run",
  main's name) for ``app.run(main)``, ("function", name) for a function
  that calls absl's app.run (directly or through im2txt_ext.cli.run),
  ("plain", name) for one that runs without flags, ("none", None) without
  a __main__ block."""
  spec = importlib.util.find_spec(module_name)
  tree = ast.parse(pathlib.Path(spec.origin).read_text(encoding="utf-8"))
  functions = {node.name: node for node in tree.body
               if isinstance(node, ast.FunctionDef)}

  def calls_run(node):
    return any(isinstance(n, ast.Call) and (
        (isinstance(n.func, ast.Name) and n.func.id == "run") or
        (isinstance(n.func, ast.Attribute) and n.func.attr == "run"))
               for n in ast.walk(node))

  for node in tree.body:
    if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
      call = node.body[0].value if isinstance(node.body[0], ast.Expr) \
          else None
      if not isinstance(call, ast.Call):
        break
      if isinstance(call.func, ast.Attribute) and call.func.attr == "run":
        return "app.run", ast.unparse(call.args[0])
      if isinstance(call.func, ast.Name) and call.func.id in functions:
        return ("function" if calls_run(functions[call.func.id])
                else "plain"), call.func.id
  return "none", None


def _start(target):
  """Imports the target's module; returns start(), which runs the tool as
  its command line would (sys.argv set first), or None for a module that
  takes no flags (running it would do the work)."""
  from absl import app
  module = importlib.import_module(target["module"])
  if "function" in target:
    return getattr(module, target["function"])
  kind, name = _main_call(target["module"])
  if kind == "app.run":
    return lambda: app.run(getattr(module, name))
  if kind == "function":
    return getattr(module, name)
  if kind == "none":
    raise ValueError(f"{target['module']} has no __main__ block: python -m "
                     "runs nothing")
  return None


def _prog(target):
  """argv[0]: the console script, or the module's name, under which absl's
  --help looks up the tool's flags."""
  return target.get("prog") if "function" in target else target["module"]


def _check_overrides():
  """--set of the parsed flags, applied to the --config file's (or the
  default) config: a misspelt or mistyped field is a problem."""
  from absl import flags
  if "set" not in flags.FLAGS or not flags.FLAGS["set"].value:
    return None
  from im2txt_ext.config import ExperimentConfig, apply_overrides
  config = ExperimentConfig()
  path = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
  if path and os.path.isfile(path):
    config = ExperimentConfig.load(path)
  try:
    apply_overrides(config, flags.FLAGS["set"].value)
  except Exception as e:  # pylint: disable=broad-except
    return f"--set: {e}"
  return None


def _job_tool(job):
  """One tool: each documented argument list parsed with the tool's own
  flags and flag parser, or its --help shown. A list of problems (None for
  none), one per entry of job["runs"] ({"args": [...]} or {"help": 1}).

  The tool starts once, as its command line would, with absl.app.run
  replaced by a stand-in that parses the flags and stops; later runs call
  the same parser again (some tools define their flags when they start,
  and cannot start twice in one process).
  """
  from absl import app, flags
  target, runs = job["target"], job["runs"]
  parser = []

  def stand_in(main, argv=None, flags_parser=None):
    del main
    app.define_help_flags()
    parser.append(flags_parser or flags.FLAGS)
    raise _Parsed(parser[0](sys.argv if argv is None else argv))

  app.run = stand_in
  start = _start(target)
  if start is None:  # Runs without flags (and without --help).
    return [f"{target['prog']} takes no flags, got {run['args']}"
            if run.get("args") else None for run in runs]
  problems = []
  for run in runs:
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    flags.FLAGS.unparse_flags()
    sys.argv = [_prog(target), *(["--help"] if run.get("help")
                                 else run["args"])]
    try:
      if parser:
        raise _Parsed(parser[0](sys.argv))
      start()
    except _Parsed as parsed:
      extra = parsed.args[0][1:]
      if run.get("help"):
        problems.append("--help did not exit")
      elif extra:
        problems.append(f"unexpected positional arguments {extra}")
      else:
        problems.append(_check_overrides())
    except SystemExit as e:
      shown = sys.stdout.getvalue()
      if run.get("help") and e.code in (0, 1, None) and re.search(
          r"^\s+--(\[no\])?\w", shown, re.M):
        problems.append(None)
      elif run.get("help"):
        problems.append(f"--help: exit status {e.code}, output "
                        f"{shown[-300:]!r}, errors "
                        f"{sys.stderr.getvalue()[-500:]!r}")
      else:
        problems.append(f"exit status {e.code}: "
                        f"{sys.stderr.getvalue().strip()[-800:]}")
    except flags.Error as e:
      problems.append(f"flags: {e}")
    else:
      problems.append("the tool ran instead of parsing its flags")
  return problems


def _attribute_chains(tree):
  """Dotted names a.b.c used in the code."""
  chains = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute):
      parts, inner = [], node
      while isinstance(inner, ast.Attribute):
        parts.append(inner.attr)
        inner = inner.value
      if isinstance(inner, ast.Name):
        chains.add((inner.id, *reversed(parts)))
  return chains


def _job_imports(job):
  """A Python block's imports, and the module attributes it uses."""
  import inspect
  tree = ast.parse(job["code"])
  namespace = {}
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      try:
        exec(compile(ast.Module([node], []), job["where"], "exec"),  # pylint: disable=exec-used
             namespace)
      except Exception as e:  # pylint: disable=broad-except
        return f"{ast.unparse(node)}: {type(e).__name__}: {e}"
  for root, *attributes in sorted(_attribute_chains(tree)):
    value = namespace.get(root)
    for i, attribute in enumerate(attributes):
      if not (inspect.ismodule(value) or inspect.isclass(value)):
        break
      if not hasattr(value, attribute):
        return f"{'.'.join([root, *attributes[:i + 1]])} does not exist"
      value = getattr(value, attribute)
  return None


def _job_run(job):
  code = compile(job["code"], job["where"], "exec")
  exec(code, {"__name__": "__main__"})  # pylint: disable=exec-used
  return None


JOBS = {"tool": _job_tool, "imports": _job_imports, "run": _job_run}


def _child(job, write_fd):
  """Runs one job with its output captured; writes the verdict; exits."""
  import traceback
  null = os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 1)
  os.dup2(null, 2)
  sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
  try:
    problem = JOBS[job["kind"]](job)
  except BaseException:  # pylint: disable=broad-except
    problem = traceback.format_exc(limit=-3)[-1500:]
  with os.fdopen(write_fd, "w") as f:
    json.dump(problem, f)
  os._exit(0)  # pylint: disable=protected-access


def run_worker(jobs, parallel=2, timeout=60):
  """{index: problem or None} of each job, each run in a forked child."""
  import selectors
  import time
  os.chdir(REPO)
  sys.path.insert(0, str(REPO))
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
  with contextlib.redirect_stdout(io.StringIO()):
    import absl.flags  # noqa: F401
    import keras  # noqa: F401
    import tensorflow  # noqa: F401
  # The parse and help jobs of one tool share a child: one import of it.
  tasks, tools = [], {}
  for index, job in enumerate(jobs):
    if job["kind"] in ("parse", "help"):
      key = json.dumps(job["target"], sort_keys=True)
      if key not in tools:
        tools[key] = {"kind": "tool", "target": job["target"], "runs": []}
        tasks.append(([], tools[key]))
      owner = next(t for t in tasks if t[1] is tools[key])
      owner[0].append(index)
      tools[key]["runs"].append({"help": 1} if job["kind"] == "help"
                                else {"args": job["args"]})
    else:
      tasks.append(([index], job))
  results, pending, running = {}, tasks, {}
  selector = selectors.DefaultSelector()
  while pending or running:
    while pending and len(running) < parallel:
      index, job = pending.pop(0)  # index: the jobs' indices.
      read_fd, write_fd = os.pipe()
      pid = os.fork()
      if pid == 0:
        os.close(read_fd)
        _child(job, write_fd)
      os.close(write_fd)
      reader = os.fdopen(read_fd)
      running[pid] = (index, reader, time.monotonic())
      selector.register(reader, selectors.EVENT_READ, pid)
    for key, _ in selector.select(timeout=1):
      pid = key.data
      index, reader, _ = running.pop(pid)
      selector.unregister(reader)
      text = reader.read()
      reader.close()
      os.waitpid(pid, 0)
      verdict = json.loads(text) if text else "the child died"
      if job_is_tool(index, verdict):
        results.update(zip(index, verdict))
      else:
        results.update((i, verdict) for i in index)
    for pid, (index, reader, started) in list(running.items()):
      if time.monotonic() - started > timeout:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        selector.unregister(reader)
        reader.close()
        running.pop(pid)
        results.update((i, f"timed out after {timeout} s") for i in index)
  return results


def job_is_tool(indices, verdict):
  """Whether a child's verdict is a tool's list, one per job."""
  return isinstance(verdict, list) and len(verdict) == len(indices)


# ---------------------------------------------------------------------------
# The tests.

import pytest  # pylint: disable=wrong-import-position

COMMANDS = shell_commands()
PYTHON_BLOCKS = [b for b in BLOCKS if b.language in ("python", "py")]
JSON_BLOCKS = [b for b in BLOCKS if b.language == "json"]


# Jobs that must fail (and one that must pass), run with the others to show
# that the checks are not vacuous: a renamed flag, a bad enum value, a
# misspelt config field, a removed function.
ROT_JOBS = [
    {"kind": "parse", "args": ["--run_dirr=runs/x"],
     "target": {"module": "im2txt_ext.cli.train", "function": "entry",
                "prog": "im2txt-train"}},
    {"kind": "parse", "args": ["--method=nope"],
     "target": {"module": "im2txt_ext.cli.caption", "function": "entry",
                "prog": "im2txt-caption"}},
    {"kind": "parse", "args": ["--set", "model.no_such_field=1"],
     "target": {"module": "im2txt_ext.cli.train", "prog": "train"}},
    {"kind": "imports", "where": "x",
     "code": "from im2txt_ext import keras_format\n"
             "keras_format.no_such_function()\n"},
    {"kind": "parse", "args": ["--config=experiments/configs/demo.json",
                               "--run_dir=runs/x"],
     "target": {"module": "im2txt_ext.cli.train", "prog": "train"}},
]


@pytest.fixture(scope="module")
def verdicts():
  """{(where, command text): [problems]} for every documented command and
  Python block, and {("rot", i): [problems]} for ROT_JOBS, from one worker
  run."""
  checked, jobs, owners = {}, [], []
  seen = {}
  for where, argv in COMMANDS:
    command = check_command(where, argv)
    checked[(where, command.text)] = command.problems
    for job in command.jobs:
      key = json.dumps(job, sort_keys=True)
      if key not in seen:
        seen[key] = len(jobs)
        jobs.append(job)
        owners.append([])
      owners[seen[key]].append((where, command.text))
  for block in PYTHON_BLOCKS:
    checked[(block.where, "python")] = []
    for kind in ("imports", "run") if block.marker == "run" else ("imports",):
      jobs.append({"kind": kind, "code": block.text, "where": block.where})
      owners.append([(block.where, "python")])
  for i, job in enumerate(ROT_JOBS):
    checked[("rot", i)] = []
    jobs.append(job)
    owners.append([("rot", i)])
  result = subprocess.run(
      [sys.executable, __file__, "--worker"], input=json.dumps(jobs),
      capture_output=True, text=True, timeout=300, cwd=str(REPO),
      env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert result.returncode == 0, result.stderr[-3000:]
  problems = json.loads(result.stdout)
  for index, problem in problems.items():
    if problem:
      job = jobs[int(index)]
      label = job["kind"] + (f" {job['target']['prog']}"
                             if "target" in job else "")
      for owner in owners[int(index)]:
        checked[owner].append(f"{label}: {problem}")
  return checked


@pytest.mark.parametrize("where, argv", COMMANDS,
                         ids=[f"{w} {a[0]}" for w, a in COMMANDS])
def test_documented_command(verdicts, where, argv):
  problems = verdicts[(where, shlex.join(argv))]
  assert not problems, f"{where}: `{shlex.join(argv)}`:\n" + "\n".join(
      problems)


@pytest.mark.parametrize("block", PYTHON_BLOCKS,
                         ids=[b.where for b in PYTHON_BLOCKS])
def test_python_block(verdicts, block):
  compile(block.text, block.where, "exec")
  problems = verdicts[(block.where, "python")]
  assert not problems, f"{block.where}:\n" + "\n".join(problems)


@pytest.mark.parametrize("block", JSON_BLOCKS,
                         ids=[b.where for b in JSON_BLOCKS])
def test_json_block(block, tmp_path):
  try:
    values = json.loads(block.text)
  except json.JSONDecodeError:
    if block.marker:
      raise
    values = json.loads("{" + block.text + "}")  # A fragment of an object.
  sys.path.insert(0, str(REPO))
  from im2txt_ext.config import ExperimentConfig, load_json
  if block.marker == "config":
    ExperimentConfig.from_dict(values, block.where)
  elif block.marker == "suite":
    from experiments.suite import Suite
    path = tmp_path / "suite.json"
    path.write_text(block.text)
    suite = load_json(Suite, str(path))
    for experiment in suite.experiments:
      assert (REPO / experiment.config).is_file(), experiment.config


def _links(path):
  """(target, line) of the Markdown links and images of a file, outside
  code."""
  text = path.read_text(encoding="utf-8")
  text = re.sub(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1", lambda m: "\n" * m.group(
      0).count("\n"), text, flags=re.M | re.S)
  text = re.sub(r"`[^`\n]*`", "", text)
  for match in re.finditer(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?[^)]*\)", text):
    yield match.group(1), text.count("\n", 0, match.start()) + 1


def _anchors(path):
  """GitHub's anchors of a Markdown file's headings."""
  anchors = set()
  for heading in re.findall(r"^#+\s+(.*)$", path.read_text(encoding="utf-8"),
                            re.M):
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
    anchors.add(slug)
  return anchors


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_relative_links_point_at_files(path):
  broken = []
  for target, line in _links(path):
    if re.match(r"^[a-z][\w+.-]*:", target):  # http:, mailto:, ...
      continue
    file_part, _, anchor = target.partition("#")
    resolved = (path.parent / file_part).resolve() if file_part else path
    if not resolved.exists():
      broken.append(f"line {line}: {target}")
    elif anchor and resolved.suffix == ".md" and \
        anchor not in _anchors(resolved):
      broken.append(f"line {line}: {target} (no such heading)")
  assert not broken, f"{path.relative_to(REPO)}: " + "; ".join(broken)


def _code_spans(path):
  text = path.read_text(encoding="utf-8")
  text = re.sub(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1", "", text,
                flags=re.M | re.S)
  return re.findall(r"`([^`\n]+)`", text)


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_repository_paths_in_the_text_exist(path):
  """`im2txt_ext/models/word_inputs.py` and the like, in the prose."""
  missing = []
  for span in _code_spans(path):
    if not span.startswith(REPO_FOLDERS) or re.search(r"[\s<{]|\.\.\.",
                                                     span):
      continue
    found = list(REPO.glob(span)) if re.search(r"[*?\[]", span) else \
        (REPO / span).exists()
    if not found:
      missing.append(span)
  assert not missing, f"{path.relative_to(REPO)}: {missing}"


def test_readme_is_a_short_front_page_linking_every_guide():
  readme = (REPO / "README.md").read_text(encoding="utf-8")
  assert len(readme.encode("utf-8")) < README_LIMIT
  linked = {target for target, _ in _links(REPO / "README.md")}
  guides = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
  assert guides <= linked, sorted(guides - linked)
  assert "make demo" in readme and "make test" in readme
  assert "im2txt_ext.caption(" in readme


RESULTS_MARKER = re.compile(r"<!--\s*results:\s*(\S+)\s*-->\n+((?:\|.*\n)+)")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_results_tables_are_made_from_their_json(path):
  """A table after ``<!-- results: docs/results/X.json -->`` is what
  ``python -m experiments.report --results_file=...`` prints from it."""
  from experiments import report
  text = path.read_text(encoding="utf-8")
  for source, table in RESULTS_MARKER.findall(text):
    document = json.loads((REPO / source).read_text(encoding="utf-8"))
    assert table.strip() == report.table(document["metrics"],
                                         document["rows"]), (
        f"{path.relative_to(REPO)}: the table after {source} differs from "
        f"python -m experiments.report --results_file={source}")


def test_every_console_script_is_documented():
  cli = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
  commands = {argv[0] for where, argv in COMMANDS
              if where.startswith("docs/cli.md")}
  assert set(SCRIPTS) <= commands, sorted(set(SCRIPTS) - commands)
  assert all(name in cli for name in SCRIPTS)


def test_the_checks_catch_rot(verdicts):
  """A renamed flag or enum value, a misspelt config field, a removed
  module, function, file, make variable or extra are caught; a good
  command passes."""
  bad = [check_command("x", ["python", "-m", "im2txt_ext.cli.no_such"]),
         check_command("x", ["im2txt-no-such"]),
         check_command("x", ["im2txt-train",
                             "--config=experiments/configs/no.json"]),
         check_command("x", ["make", "demo", "NO_SUCH_VARIABLE=1"]),
         check_command("x", ["make", "no-such-target"]),
         check_command("x", ["pip", "install", "-e", ".[no_such_extra]"]),
         check_command("x", ["rm", "-rf", "build"])]
  assert all(c.problems for c in bad), [(c.text, c.problems) for c in bad]
  assert all(verdicts[("rot", i)] for i in range(len(ROT_JOBS) - 1)), [
      verdicts[("rot", i)] for i in range(len(ROT_JOBS))]
  assert not verdicts[("rot", len(ROT_JOBS) - 1)]


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
  print(json.dumps(run_worker(json.loads(sys.stdin.read()))))
