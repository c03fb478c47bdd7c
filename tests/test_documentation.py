"""The documentation against the code: README.md and docs/*.md say only what the study can do.

- every ```python block runs (in one subprocess, each block in a namespace of its own). A block preceded by
  ``<!-- run-with: NAME ... -->`` gets a tiny synthetic setting (``model``, ``model_b``, ``images``, ``labels``: two
  untrained functional classifiers with a ``features`` feature map and a ``logits`` layer, random images, labels
  mostly equal to the first model's predictions); a block preceded by ``<!-- not-run: reason -->`` (real data, a GPU)
  is skipped with that reason, which must be given;
- every ``make`` target (and ``VAR=value`` variable) the pages name exists in the Makefile;
- every ``-p key=value`` / ``-p NN.key=value`` names a parameter that the notebook(s) declare;
- every ``--flag`` given to ``python -m helpers.<module>`` or ``python benchmarks/<script>.py`` exists in that
  command's argparse (``--help``, or the script's ``add_argument`` calls); a flag quoted alone belongs to one of them;
- every ``helpers.<name>`` quoted in the pages resolves, and the public names listed in docs/metrics-api.md equal
  ``helpers.__all__`` (read at test time);
- every relative link (and its ``#anchor``) resolves; every ``package==version`` pin matches constraints.txt;
- the Colab recipe sets the paper profile's values in every notebook from 01;
- the README stays under 12 KB, holds the generated blocks' markers, and quotes no demo result by hand.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import helpers

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 12 * 1024

#: Numbers of the paper (not of a demo run) that the README's prose may quote: test recall and AOPC of both models.
PAPER_NUMBERS = {"0.86", "0.88", "0.45", "0.49"}
#: Markers of the README's generated blocks (written by ``make docs``), in order.
MARKERS = (
    "<!-- demo-summary:start -->",
    "<!-- demo-summary:end -->",
    "<!-- demo-seeds:start -->",
    "<!-- demo-seeds:end -->",
)
#: Flags of other programs that the pages quote alone.
OTHER_FLAGS = {"--allow-root"}  # jupyter lab (make lab)
#: Names the ``run-with`` setting defines for a block.
SETTING_NAMES = {"model", "model_b", "images", "labels"}
#: Parameters of the Colab recipe that the reader chooses (not values of the paper profile).
READER_CHOSEN = {"profile", "work_dir", "data_dir"}

SETTING = """
import keras
import numpy as np

keras.utils.set_random_seed(0)


def _toy_classifier():
    inputs = keras.Input((32, 32, 1))
    features = keras.layers.Conv2D(8, 3, activation="relu", name="features")(inputs)
    logits = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(features))
    return keras.Model(inputs, keras.layers.Softmax(name="probabilities")(logits))


model = _toy_classifier()
model_b = keras.models.clone_model(model)
_rng = np.random.default_rng(0)
model_b.set_weights([w + 0.01 * _rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()])
images = _rng.random((12, 32, 32, 1), dtype=np.float32)
labels = model.predict(images, verbose=0).argmax(axis=-1)
labels[:2] = 1 - labels[:2]  # two misclassified images
"""

RUNNER = """
import contextlib, io, json, sys, traceback

import importlib

payload = json.load(open(sys.argv[1]))
blocks, names = payload["blocks"], payload["names"]
setting = None
results = {"names": {}}


def resolve(dotted):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


for name in names:
    try:
        resolve(name)
        results["names"][name] = None
    except Exception as exc:
        results["names"][name] = f"{type(exc).__name__}: {exc}"
for block in blocks:
    namespace = {"__name__": "__doc_block__"}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            if block["setting"]:
                if setting is None:
                    setting = {"__name__": "__doc_setting__"}
                    exec(compile(SETTING, "<run-with setting>", "exec"), setting)
                namespace.update({k: v for k, v in setting.items() if not k.startswith("__")})
            exec(compile(block["code"], block["id"], "exec"), namespace)
        results[block["id"]] = {"ok": True, "stdout": out.getvalue()}
    except BaseException:
        results[block["id"]] = {"ok": False, "stdout": out.getvalue(), "error": traceback.format_exc()}
json.dump(results, open(sys.argv[2], "w"))
"""


# ----------------------------------------------------------------------------------------------------
# Reading the pages
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: page, line of its opening fence, language, code, and the HTML comment just before it."""

    page: Path
    line: int
    lang: str
    code: str
    comment: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_COMMENT = re.compile(r"^\s*<!--\s*(.*?)\s*-->\s*$")


def _split(path: Path) -> tuple[list[Block], str]:
    """The fenced blocks of a page, and its prose (every line outside them; fenced lines left blank)."""
    blocks, prose = [], []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            prose.append(lines[i])
            i += 1
            continue
        indent, lang, start = len(match.group(1)), match.group(2), i
        body = []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())  # a list item's block
            i += 1
        i += 1  # the closing fence
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        comment = _COMMENT.match(previous)
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", comment.group(1) if comment else None))
        prose.extend([""] * (i - start))
    return blocks, "\n".join(prose)


@functools.cache
def _page(path: Path) -> tuple[list[Block], str]:
    return _split(path)


def _blocks(*langs: str) -> list[Block]:
    return [block for page in PAGES for block in _page(page)[0] if block.lang in langs]


def _inline_code(text: str) -> list[str]:
    """Inline code spans of prose (a span may wrap across a line break)."""
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)]


@functools.cache
def _commands() -> tuple[tuple[str, str], ...]:
    """(where, command) for every shell line of a fenced block (continuations joined, comments cut) and inline span."""
    found = []
    for block in _blocks("bash", "sh", "shell", "console"):
        for n, line in enumerate(block.code.replace("\\\n", " ").splitlines()):
            line = re.split(r"\s#\s|\s#$|^#", line, maxsplit=1)[0].strip()
            if line:
                found.append((f"{block.id} (line {n + 1})", line))
    for page in PAGES:
        for span in _inline_code(_page(page)[1]):
            found.append((str(page.relative_to(ROOT)), span))
    return tuple(found)


def _segments(command: str) -> list[str]:
    """A command line cut at ``&&``, ``||``, ``;`` and ``|``."""
    return [part.strip() for part in re.split(r"&&|\|\||;|\|", command) if part.strip()]


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


# ----------------------------------------------------------------------------------------------------
# The python blocks run
# ----------------------------------------------------------------------------------------------------

PYTHON_BLOCKS = _blocks("python", "py")


def _directive(block: Block) -> tuple[str, str] | None:
    if block.comment is None:
        return None
    match = re.match(r"^(not-run|run-with)\s*:?\s*(.*)$", block.comment, re.S)
    return (match.group(1), match.group(2).strip()) if match else None


def _quoted_names() -> dict[str, list[str]]:
    """Every ``helpers.<name>`` (or ``helpers.<name>()``) quoted as inline code, with the pages that quote it."""
    quoted: dict[str, list[str]] = {}
    for page in PAGES:
        for span in _inline_code(_page(page)[1]):
            match = re.fullmatch(r"(helpers(?:\.[A-Za-z_]\w*)+)(?:\(\))?", span)
            if match:
                quoted.setdefault(match.group(1), []).append(str(page.relative_to(ROOT)))
    return quoted


@pytest.fixture(scope="module")
def doc_run(tmp_path_factory):
    """In one subprocess (one Keras import): resolve the quoted names, run every runnable python block in a fresh
    namespace. Results by block id, and under ``names`` the error of each name (None when it resolves)."""
    runnable = [b for b in PYTHON_BLOCKS if (_directive(b) or ("",))[0] != "not-run"]
    folder = tmp_path_factory.mktemp("doc-blocks")
    blocks = [{"id": b.id, "code": b.code, "setting": (_directive(b) or ("",))[0] == "run-with"} for b in runnable]
    payload = {"blocks": blocks, "names": sorted(_quoted_names())}
    (folder / "blocks.json").write_text(json.dumps(payload))
    script = f"SETTING = {SETTING!r}\n" + textwrap.dedent(RUNNER)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder / "blocks.json"), str(folder / "results.json")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"the block runner failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads((folder / "results.json").read_text())


def test_the_pages_hold_python_blocks():
    assert any(b.page == README for b in PYTHON_BLOCKS), "the README shows the metrics on a model in a python block"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_every_python_block_runs(block, doc_run):
    directive = _directive(block)
    if (
        block.comment is not None
        and directive is None
        and block.comment.split(":")[0].strip() in ("not-run", "run-with")
    ):
        pytest.fail(f"{block.id}: unreadable directive <!-- {block.comment} -->")
    if directive and directive[0] == "not-run":
        assert directive[1], f"{block.id}: <!-- not-run: ... --> must give the reason the block cannot run here"
        pytest.skip(f"{block.id} needs {directive[1]}")
    if directive and directive[0] == "run-with":
        asked = set(directive[1].replace(",", " ").split())
        assert asked, f"{block.id}: <!-- run-with: ... --> must name what the block uses ({sorted(SETTING_NAMES)})"
        assert asked <= SETTING_NAMES, f"{block.id}: the test setting has no {sorted(asked - SETTING_NAMES)}"
    result = doc_run[block.id]
    assert result["ok"], f"{block.id} fails:\n{result['error']}"


def test_directives_stand_before_python_blocks():
    for page in PAGES:
        lines = page.read_text().splitlines()
        for n, line in enumerate(lines):
            match = _COMMENT.match(line)
            if not match or not re.match(r"^(not-run|run-with)\b", match.group(1)):
                continue
            following = next((nxt for nxt in lines[n + 1 :] if nxt.strip()), "")
            fence = _FENCE.match(following)
            assert fence and fence.group(2) in ("python", "py"), (
                f"{page.relative_to(ROOT)}:{n + 1}: <!-- {match.group(1)} --> must stand right before a ```python block"
            )


# ----------------------------------------------------------------------------------------------------
# make targets, -p parameters, command-line flags
# ----------------------------------------------------------------------------------------------------


@functools.cache
def _makefile() -> tuple[set[str], str]:
    text = (ROOT / "Makefile").read_text()
    targets = set()
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][\w.-]*(?:\s+[A-Za-z0-9][\w.-]*)*)\s*:(?![=:])", line)
        if match:
            targets.update(match.group(1).split())
    return targets, text


@functools.cache
def _make_calls() -> tuple[tuple[str, tuple[str, ...], dict[str, str]], ...]:
    """(where, targets, variables) of every ``make`` command the pages give."""
    calls = []
    for where, command in _commands():
        for segment in _segments(command):
            words = _tokens(segment)
            if not words or words[0] != "make":
                continue
            targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            variables = dict(w.split("=", 1) for w in words[1:] if "=" in w and not w.startswith("-"))
            calls.append((where, tuple(targets), variables))
    return tuple(calls)


def test_every_make_target_the_docs_name_exists():
    targets, text = _makefile()
    calls = _make_calls()
    assert any("study" in t for _, t, _ in calls) and any("test" in t for _, t, _ in calls)
    problems = []
    for where, named, variables in calls:
        problems += [f"{where}: make {t} (no such target)" for t in named if t not in targets]
        problems += [
            f"{where}: make {name}=... (the Makefile never reads {name})"
            for name in variables
            if f"$({name})" not in text and not re.search(rf"^{name}\s*[?:]?=", text, re.M)
        ]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def declared() -> dict[str, dict]:
    """Every notebook's parameters and their literal defaults, by notebook stem."""
    from helpers.runner.profiles import notebook_parameters

    return {path.stem: notebook_parameters(path) for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))}


_OVERRIDE = re.compile(r"(?:^|\s)(?:-p|--param)\s+([A-Za-z0-9_.]+)=")


def test_every_parameter_the_docs_set_is_declared(declared):
    every = set().union(*declared.values())
    problems, seen = [], 0
    for where, command in _commands():
        for key in _OVERRIDE.findall(command):
            section, _, name = key.rpartition(".")
            if name == "key":  # the placeholder of "-p key=value" / "-p NN.key=value"
                continue
            seen += 1
            if not section:
                if name not in every:
                    problems.append(f"{where}: -p {key}: no notebook declares {name!r}")
                continue
            notebooks = [stem for stem in declared if stem == section or stem.split("_")[0] == section]
            if not notebooks:
                problems.append(f"{where}: -p {key}: no notebook {section!r}")
            elif name not in declared[notebooks[0]]:
                problems.append(f"{where}: -p {key}: {notebooks[0]} does not declare {name!r}")
    assert seen, "the docs set no parameter with -p"
    assert not problems, "\n".join(problems)


@functools.cache
def _module_flags(module: str) -> frozenset[str]:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"python -m {module} --help fails:\n{done.stderr[-2000:]}"
    return frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", done.stdout))


@functools.cache
def _script_flags(script: str) -> frozenset[str]:
    path = ROOT / script
    assert path.is_file(), f"{script} does not exist"
    return frozenset(re.findall(r"""["'](--[a-z][a-z0-9-]*)["']""", path.read_text())) | {"--help"}


_MODULE = re.compile(r"python[\d.]*\s+-m\s+(helpers(?:\.\w+)*)")
_SCRIPT = re.compile(r"python[\d.]*\s+(benchmarks/[\w-]+\.py)")
_RECIPE_MODULE = re.compile(r"\s-m\s+(helpers(?:\.\w+)*)")  # $(PY) -m helpers.runner.sweep in the Makefile


@functools.cache
def _flag_uses() -> list[tuple[str, str, frozenset[str], list[str]]]:
    """(where, command name, its flags, the flags given) for every helpers module or benchmark script the docs run."""
    uses = []
    _, makefile = _makefile()
    for where, command in _commands():
        for segment in _segments(command):
            for pattern, flags_of in ((_MODULE, _module_flags), (_SCRIPT, _script_flags)):
                match = pattern.search(segment)
                if match:
                    given = [w.split("=")[0] for w in _tokens(segment[match.end() :]) if w.startswith("--")]
                    uses.append((where, match.group(1), flags_of(match.group(1)), given))
    for where, _targets, variables in _make_calls():
        for name, value in variables.items():  # e.g. SWEEP_ARGS="--executor ray": flags of the recipe's module
            recipe = [line for line in makefile.splitlines() if f"$({name})" in line and _RECIPE_MODULE.search(line)]
            given = [w.split("=")[0] for w in _tokens(value) if w.startswith("--")]
            if recipe and given:
                module = _RECIPE_MODULE.search(recipe[0]).group(1)
                uses.append((where, f"make ... {name}= ({module})", _module_flags(module), given))
    return uses


def test_every_flag_given_to_a_command_exists():
    uses = _flag_uses()
    named = {name for _, name, _, _ in uses}
    assert {"helpers.runner.pipeline", "helpers.runner.sweep"} <= named, f"the docs run {sorted(named)}"
    problems = [
        f"{where}: {name} has no option {flag}"
        for where, name, flags, given in uses
        for flag in given
        if flag not in flags
    ]
    assert not problems, "\n".join(problems)


def test_every_flag_quoted_alone_belongs_to_a_documented_command():
    known = set(OTHER_FLAGS).union(*(flags for _, _, flags, _ in _flag_uses()))
    problems = []
    for page in PAGES:
        for span in _inline_code(_page(page)[1]):
            words = span.split()
            if words and re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", words[0]):
                flag = words[0].split("=")[0]
                if flag not in known:
                    problems.append(f"{page.relative_to(ROOT)}: `{span}`: no documented command has {flag}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------------
# Names of the package
# ----------------------------------------------------------------------------------------------------


def test_the_documented_public_names_are_helpers_all():
    page = ROOT / "docs" / "metrics-api.md"
    listed = re.findall(r"^\|\s*`helpers\.(\w+)`\s*\|", page.read_text(), re.M)
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    assert not duplicates, f"docs/metrics-api.md lists {duplicates} more than once"
    public = set(helpers.__all__)
    missing, extra = sorted(public - set(listed)), sorted(set(listed) - public)
    assert not missing, f"helpers.__all__ has names docs/metrics-api.md does not list (add a row each): {missing}"
    assert not extra, f"docs/metrics-api.md lists names that are not in helpers.__all__: {extra}"


def test_every_helpers_name_the_docs_quote_exists(doc_run):
    quoted = _quoted_names()
    assert quoted
    problems = [
        f"{', '.join(sorted(set(quoted[n])))}: `{n}` does not resolve ({e})" for n, e in doc_run["names"].items() if e
    ]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------------
# Links, pins, the Colab recipe
# ----------------------------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", _page(path)[1], re.M)}


def test_every_relative_link_resolves():
    problems, seen = [], 0
    for page in PAGES:
        for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", _page(page)[1]):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            seen += 1
            file, _, anchor = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            if not resolved.exists():
                problems.append(f"{page.relative_to(ROOT)}: ({target}) points at a missing file")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                problems.append(f"{page.relative_to(ROOT)}: ({target}) names no heading of {resolved.name}")
    assert seen
    assert not problems, "\n".join(problems)


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def test_every_pinned_version_the_docs_give_is_the_constraint():
    pins, problems = _constraints(), []
    for where, command in _commands():
        for name, version in re.findall(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([0-9][\w.]*)", command):
            key = re.sub(r"[-_.]+", "-", name).lower()
            if key in pins and pins[key] != version:
                problems.append(f"{where}: {name}=={version}, but constraints.txt pins {pins[key]}")
    assert not problems, "\n".join(problems)


def _paper_values(declared: dict[str, dict]) -> dict[str, dict]:
    """Per notebook, the values the paper profile gives it (``shared`` where declared, then its own section)."""
    profile = yaml.safe_load((ROOT / "params" / "paper.yaml").read_text())
    values = {}
    for stem, names in declared.items():
        section = profile.get(stem) or profile.get(stem.split("_")[0]) or {}
        values[stem] = {**{k: v for k, v in (profile.get("shared") or {}).items() if k in names}, **section}
    return values


def test_the_colab_recipe_sets_the_paper_profile_in_every_notebook(declared):
    text = (ROOT / "docs" / "paper-and-colab.md").read_text()
    rows = dict(re.findall(r"^\|\s*`(\d\d_\w+)`\s*\|(.*)\|\s*$", text, re.M))
    assert sorted(rows) == sorted(declared), "the Colab table needs one row per notebook, from 01"
    paper, problems = _paper_values(declared), []
    for stem, cells in rows.items():
        given = {name: value for name, value in re.findall(r"`(\w+) = ([^`]+)`", cells)}
        for name, raw in given.items():
            if name in READER_CHOSEN:
                continue
            value = ast.literal_eval(raw)
            if name not in paper[stem]:
                problems.append(f"{stem}: sets {name}, which the paper profile does not set")
            elif value != paper[stem][name]:
                problems.append(f"{stem}: {name} = {raw}, the paper profile has {paper[stem][name]!r}")
        for name, value in paper[stem].items():
            default = ast.literal_eval(declared[stem][name]) if name in declared[stem] else None
            if name not in READER_CHOSEN and value != default and name not in given:
                problems.append(f"{stem}: leaves {name} at the demo's {default!r}; the paper profile has {value!r}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------------
# The README itself
# ----------------------------------------------------------------------------------------------------


def test_the_readme_is_read_in_five_minutes():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail into docs/ (limit {README_LIMIT})"


def test_the_readme_holds_the_generated_blocks_in_order():
    lines = README.read_text().splitlines()
    where = []
    for marker in MARKERS:
        found = [n for n, line in enumerate(lines) if line.strip() == marker]
        assert len(found) == 1, f"README.md needs {marker} once, on a line of its own"
        where += found
    assert where == sorted(where), f"README.md's markers must come in the order {MARKERS}"


def test_the_readme_quotes_no_demo_result_by_hand():
    text = _page(README)[1]
    for start, end in (MARKERS[:2], MARKERS[2:]):
        text = text[: text.index(start)] + text[text.index(end) + len(end) :]
    text = re.sub(r"`[^`]*`", "", text)
    typed = re.findall(r"(?<![\w.])[-−]?([01]\.\d{2,})(?![\w.])", text)
    unexpected = sorted(set(typed) - PAPER_NUMBERS)
    assert not unexpected, (
        f"README.md's prose quotes {unexpected}: demo numbers come only from the generated blocks (make docs); "
        f"the paper's own numbers are {sorted(PAPER_NUMBERS)}"
    )
