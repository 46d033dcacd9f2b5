"""The package reads top-down and the commands a user types exist: no import circle, each layer imports only layers
below it, `hsd-lightning` / `python -m hsd_lightning` reach the LightningCLI and every tool (each with --help), and
every experiment config says what it measured and where its result is."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from hsd_lightning.__main__ import TOOLS
from hsd_lightning.cli import CONFIG_DIR

PACKAGE = Path(__file__).resolve().parents[1] / "hsd_lightning"
# top-down: a module may import its own layer and the layers below it, never one above
LAYERS = {"families": 0, "library_noise": 0, "decoding": 1, "training": 2, "models": 3, "data": 4, "evaluation": 4,
          "benchmark": 4, "cli": 5, "tools": 6, "__main__": 7}


def _imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at top level or inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mod = ".".join(parts[:-1] if is_pkg else parts)
        pkg = mod if is_pkg else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if node.level else []
                # `from . import schedules` imports the submodule, not the package
                targets = [".".join(base + [node.module])] if node.module else \
                    [".".join(base + [a.name]) for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("hsd_lightning") and target != mod:
                    graph.setdefault(mod, set()).add(target)
    return graph


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "families"  # the package's own __init__ imports nothing


def test_each_layer_imports_only_layers_below_it():
    upward = [f"{m} -> {t}" for m, ts in _imports().items() for t in ts if LAYERS[_layer(t)] > LAYERS[_layer(m)]]
    assert not upward, upward


def test_no_import_circle():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else nxt)
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for mod in list(graph):
        if mod not in state:
            visit(mod, [mod])


def _run(*args):
    return subprocess.run([sys.executable, "-m", "hsd_lightning", *args], capture_output=True, text=True)


def test_console_lists_tools_and_each_tool_has_help(capsys, monkeypatch):
    """In this process (the tools' imports are shared; test_lightning_subcommands_through_the_console_entry runs
    the real command)."""
    from hsd_lightning.__main__ import main

    monkeypatch.setattr(sys, "argv", ["hsd-lightning"])
    main(["--help"])
    top = capsys.readouterr().out
    assert all(name in top for name in TOOLS), top
    for name in TOOLS:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0 and f"usage: hsd-lightning {name}" in capsys.readouterr().out, name
    bad = _run("sweeep")
    assert bad.returncode != 0 and "unknown command 'sweeep'" in bad.stderr


def test_console_script_is_declared():
    import tomllib

    meta = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["hsd-lightning"] == "hsd_lightning.__main__:main"


def test_lightning_subcommands_through_the_console_entry(tmp_path):
    out = _run("predict", "--config", str(CONFIG_DIR / "default.yaml"), "--print_config")
    assert out.returncode == 0 and "class_path: hsd_lightning.data.E2EDataModule" in out.stdout
    # the printed config reloads from another folder: no relative compose paths left in it
    cfg = tmp_path / "printed.yaml"
    cfg.write_text(_run("fit", "--config", str(CONFIG_DIR / "smollm2_e2e_skipaware.yaml"), "--print_config").stdout)
    assert "compose: [" not in cfg.read_text() and "train_plans" in cfg.read_text()
    again = subprocess.run([sys.executable, "-m", "hsd_lightning", "fit", "--config", cfg.name, "--print_config"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-800:]


@pytest.mark.parametrize("cfg", sorted(CONFIG_DIR.glob("experiments/*/*.yaml")), ids=lambda p: p.stem)
def test_experiment_config_says_what_it_measured_and_where(cfg):
    first = cfg.read_text().splitlines()[0]
    task = cfg.parent.name
    assert first.startswith("# Experiment:") and f"docs/results/{task}.md" in first, first
    assert (CONFIG_DIR.parent / "docs" / "results" / f"{task}.md").exists()


def test_top_level_configs_are_the_paper_grid_the_task_configs_and_the_default():
    names = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    tasks = ("e2e", "commongen", "xsum", "cnndm", "healthcaremagic")
    expected = {"default", "smollm2_pairs"} | {f"{m}_{t}" for m in ("gpt2", "phi2", "smollm2") for t in tasks} \
        | {f"smollm2_{t}_{k}" for t in tasks for k in ("lora", "skipaware")}
    assert names == expected, names ^ expected


def test_wheel_is_lean_and_self_contained(tmp_path):
    """The wheel ships the main job's adapter only (<= 30 MB in all), the configs the CLI loads (default, presets),
    and the console command."""
    import zipfile

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          str(PACKAGE.parent), "-w", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    [wheel] = tmp_path.glob("*.whl")
    assert wheel.stat().st_size <= 30 * 2**20
    names = zipfile.ZipFile(wheel).namelist()
    adapters = {n.split("/")[2] for n in names if n.startswith("hsd_lightning/adapters/")}
    assert adapters == {"smollm2-e2e-skipaware-4108-onpolicy"}
    assert {"hsd_lightning/configs/default.yaml", "hsd_lightning/configs/presets/base.yaml"} <= set(names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hsd-lightning = hsd_lightning.__main__:main" in zipfile.ZipFile(wheel).read(entry).decode()
