"""The labs' Colab set-up cell: it clones the repository the site links to, and it works.

The slow test simulates Colab on this machine (see its docstring for what it does and does not cover)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ftrag import bootstrap
from ftrag.paths import REPO_ROOT

LABS = sorted((REPO_ROOT / "labs").glob("0*.ipynb"))


def test_the_clone_url_is_the_repository_the_site_links_to():
    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert bootstrap.REPO_URL == config["repository"]["url"]
    assert len(LABS) == 4
    for lab in LABS:
        first = "".join(json.loads(lab.read_text(encoding="utf-8"))["cells"][0]["source"])
        assert f'os.environ.get("{bootstrap.CLONE_URL_ENV}", "{config["repository"]["url"]}")' in first, lab.name


COLAB_STUB = '"""Stand-in for the module Colab kernels import at start-up (the set-up cell checks for it)."""\n'


@pytest.mark.slow
def test_on_a_simulated_colab_lab_0_installs_the_course_and_runs_to_the_end(tmp_path):
    """What is simulated: a Python environment where ``ftrag`` is not importable and ``google.colab``
    is imported at start-up, as on Colab; the set-up cell then really clones the repository (this
    checkout's committed HEAD, through ``FTRAG_CLONE_URL=file://...``), really runs both pip commands
    (``pip install -e`` of the clone included) and puts the clone's ``src`` first; nbclient runs
    every cell of this checkout's labs/00_setup.ipynb in a kernel of that environment, on the cpu
    profile, with the clone's package, converting the GGUF model into the clone's fresh cache.

    What is not: the environment is a new venv whose site-packages *links* the course's installed
    libraries (a .pth line), so pip finds every pin already satisfied and downloads nothing
    (``PIP_NO_INDEX``; Colab downloads them, about 3 minutes); there is no GPU, so the gpu profile is
    not picked; Colab's preinstalled library versions, its RAM limit and GitHub itself are not tested.
    """
    site = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    venv = tmp_path / "colab-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip())
    stub = tmp_path / "stub"
    (stub / "google" / "colab").mkdir(parents=True)
    (stub / "google" / "colab" / "__init__.py").write_text(COLAB_STUB)
    (venv_site / "colab_sim.pth").write_text(f"{stub}\n{site}\nimport google.colab\n")
    kernel = venv / "share" / "jupyter" / "kernels" / "python3"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({"argv": [str(python), "-m", "ipykernel_launcher", "-f",
                                                             "{connection_file}"], "display_name": "colab-sim",
                                                    "language": "python"}))
    course = tmp_path / "content" / "course"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTRAG_", "PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    env.update({bootstrap.CLONE_URL_ENV: f"file://{REPO_ROOT}", bootstrap.CLONE_DIR_ENV: str(course),
                "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "HF_HUB_OFFLINE": "1",
                "HOME": str(tmp_path), "JUPYTER_PATH": str(venv / "share" / "jupyter")})
    check = "import importlib.util, sys; print(importlib.util.find_spec('ftrag'), 'google.colab' in sys.modules)"
    assert subprocess.run([python, "-c", check], env=env, capture_output=True, text=True,
                          cwd=tmp_path).stdout.split() == ["None", "True"]
    runner = textwrap.dedent(f"""
        import nbformat, sys
        from nbclient import NotebookClient
        nb = nbformat.read({str(REPO_ROOT / "labs" / "00_setup.ipynb")!r}, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={{"metadata": {{"path": {str(tmp_path)!r}}}}}).execute()
        print("every cell ran")
        """)
    done = subprocess.run([python, "-c", runner], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0 and "every cell ran" in done.stdout, done.stderr[-3000:]
    assert (course / "src" / "ftrag" / "__init__.py").is_file() and (course / ".cache" / "models").is_dir()
    installed = subprocess.run([python, "-c", "import ftrag; print(ftrag.__file__)"], env=env, capture_output=True,
                               text=True, cwd=tmp_path).stdout.strip()
    assert installed == str(course / "src" / "ftrag" / "__init__.py")
