"""Where things live, and how a lab prints a location."""
from ftrag import paths


def test_for_display_hides_where_the_repository_sits(tmp_path):
    inside = paths.REPO_ROOT / ".cache" / "indexes" / "kb-1234"
    assert paths.for_display(inside) == ".cache/indexes/kb-1234"
    assert paths.for_display(str(inside)) == ".cache/indexes/kb-1234"
    outside = tmp_path / "elsewhere" / "adapter-5678"
    assert paths.for_display(outside) == "adapter-5678"
    assert str(tmp_path) not in paths.for_display(outside)
