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
