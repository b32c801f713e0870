import numpy as np
import pytest

from diffxai.classes import ClassInfo, class_table, resolve_class, resolve_classes
from diffxai.errors import DiffxaiError

PERSIAN = "n02123394"


def test_table_is_complete_and_consistent():
    table = class_table()
    assert len(table) == 1000
    assert [c.index for c in table] == list(range(1000))
    assert len({c.synset for c in table}) == 1000
    assert len({c.slug for c in table}) == 1000
    assert all(isinstance(c, ClassInfo) for c in table)
    assert all(c.url.startswith("https://") for c in table)
    assert all(len(c.sha256) == 64 and int(c.sha256, 16) >= 0 for c in table)
    assert class_table() is table  # cached


@pytest.mark.parametrize("spec", [
    "n02123394", "N02123394", 283, "283", " 283 ", np.int64(283),
    "Persian cat", "persian cat", "PERSIAN CAT", "Persian_cat", "persian-cat", "  persian   cat ",
    "persian_cat",
])
def test_resolve_persian_cat_by_any_spec(spec):
    info = resolve_class(spec)
    assert (info.synset, info.index, info.name, info.slug) == (PERSIAN, 283, "Persian cat", "persian_cat")


def test_resolve_names_with_punctuation():
    assert resolve_class("jack-o'-lantern").synset == "n03590841"
    assert resolve_class("jack o lantern").synset == "n03590841"
    assert resolve_class("carpenters kit").synset == "n02966687"
    assert resolve_class("carpenter_s_kit").synset == "n02966687"


def test_unknown_name_suggests_near_matches():
    with pytest.raises(DiffxaiError) as exc:
        resolve_class("persain cat")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("unknown class 'persain cat'; did you mean: Persian cat (n02123394)")


def test_unknown_synset_and_garbage():
    with pytest.raises(DiffxaiError, match=r"unknown class 'n0212339'.*n02123394"):
        resolve_class("n0212339")
    with pytest.raises(DiffxaiError, match=r"unknown class 'n99999999'"):
        resolve_class("n99999999")
    with pytest.raises(DiffxaiError, match=r"unknown class 'xyzzy'; give a synset"):
        resolve_class("xyzzy")


@pytest.mark.parametrize("spec", [1000, -1, "1000"])
def test_index_out_of_range(spec):
    with pytest.raises(DiffxaiError, match="out of range 0-999"):
        resolve_class(spec)


@pytest.mark.parametrize("spec", [True, 2.5, None, "", "   "])
def test_bad_spec_types(spec):
    with pytest.raises(DiffxaiError):
        resolve_class(spec)


@pytest.mark.parametrize("name, synsets", [
    ("crane", ["n02012849", "n03126707"]),
    ("cardigan", ["n02113186", "n02963159"]),
    ("Cardigan", ["n02113186", "n02963159"]),
    ("maillot", ["n03710637", "n03710721"]),
])
def test_ambiguous_names_list_candidates(name, synsets):
    with pytest.raises(DiffxaiError) as exc:
        resolve_class(name)
    msg = str(exc.value)
    assert "\n" not in msg and "ambiguous" in msg and "use the synset" in msg
    for synset in synsets:
        info = resolve_class(synset)
        assert synset in msg and f"index {info.index}" in msg
        assert resolve_class(info.slug) == info  # slugs of shared names carry the synset


def test_resolve_classes_list_and_all():
    infos = resolve_classes(["tench", 283, "n01443537"])
    assert [c.index for c in infos] == [0, 283, 1]
    assert resolve_classes("all") == list(class_table())
    assert len(resolve_classes("ALL")) == 1000


def test_resolve_classes_duplicate_names_both_specs():
    with pytest.raises(DiffxaiError) as exc:
        resolve_classes(["tench", "persian_cat", "n02123394"])
    msg = str(exc.value)
    assert "\n" not in msg
    assert "'persian_cat'" in msg and "'n02123394'" in msg and "Persian cat" in msg


def test_resolve_classes_errors():
    with pytest.raises(DiffxaiError, match="empty"):
        resolve_classes([])
    with pytest.raises(DiffxaiError, match="'all'"):
        resolve_classes("tench")
    with pytest.raises(DiffxaiError, match="unknown class 'persain cat'"):
        resolve_classes(["tench", "persain cat"])
