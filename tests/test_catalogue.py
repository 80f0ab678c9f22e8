"""One catalogue of named settings: the recipes, the presets and the model card's seed papers are views of it, so a
name cannot be a preset in one list and missing from the card's table in another."""

from sae_lens_ortho.hub import SEED_PAPERS, SEED_TITLES
from sae_lens_ortho.presets import PRESETS
from sae_lens_ortho.saes.catalogue import CATALOGUE, named
from sae_lens_ortho.saes.recipes import RECIPES


def test_names_are_unique_and_every_list_is_a_view_of_the_catalogue():
    names = [entry.name for entry in CATALOGUE]
    assert len(names) == len(set(names))
    assert list(PRESETS) == list(named("preset")) and list(RECIPES) == list(named("recipe"))
    assert set(SEED_PAPERS) == {entry.name for entry in CATALOGUE if entry.seed}
    for name, make in PRESETS.items():
        preset, entry = make(), named("preset")[name]
        assert (preset.name, preset.seed, preset.use_for) == (name, entry.seed, entry.summary)
        assert SEED_PAPERS[name].seed == preset.seed and SEED_PAPERS[name].title == SEED_TITLES[preset.seed]
    for name, recipe in RECIPES.items():
        assert recipe.architecture == named("recipe")[name].architecture and recipe.overrides


def test_every_entry_says_what_it_is():
    for entry in CATALOGUE:
        assert entry.seed in ("", *SEED_TITLES), entry.name
        assert bool(entry.follows) == bool(entry.seed), entry.name
        assert entry.kind == "architecture" or entry.summary, entry.name
        assert (entry.kind == "recipe") == bool(entry.architecture), entry.name
