"""Task world, text side: ontology, templates, ROI descriptions, target programs.

These tests need no scans: cases are described by :class:`CaseInfo` objects drawn here
(random scans and lesion tags), so prompt and program writing is tested on its own. The
oracle check against synthetic scans is in ``test_tasks_oracle.py``.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from vpcli.tasks.categories import LOCATION_REGIONS, TERRITORY_REGIONS, Unwritable
from vpcli.tasks.described import describe_case
from vpcli.tasks.ontology import LesionQuery, lesion_canonical, load_ontology, parse_target
from vpcli.tasks.roi import lesion_description, matching_lesions, shared_slots
from vpcli.tasks.sampler import plan_task, write_task
from vpcli.tasks.slot_expansion import (TemplateError, count_expansions, expand, iter_expansions,
                                        reachable_alternatives)
from vpcli.tasks.templates import CATEGORIES, load_templates
from vpcli.tasks.world import CaseInfo, LesionInfo

#: every runtime binding a template may use, with a stand-in value
BINDINGS = {'roi': 'the ROI', 'roi_bare': 'ROI', 'roi2': 'the REF', 'roi2_bare': 'REF', 'roi_is': 'is', 'roi2_is': 'is',
            'roi_key': 'KEY', 'axis_noun': '{extent_lr}', 'axis_word': '{axisword_lr}',
            'intensity': '{mri_intensity}', 'on_modality': 'on the T1', 'margin': '5 mm'}
#: the axis bindings a category with axis templates may get
AXIS_BINDINGS = [{'axis_noun': '{extent_' + a + '}', 'axis_word': '{axisword_' + a + '}'}
                 for a in ('lr', 'ap', 'si')]


def fake_case(plan, rng: np.random.Generator) -> CaseInfo:
    """A case description as the synthesiser would give for ``plan``, with random tags."""
    return describe_case(plan, rng)


def draw(rng: np.random.Generator, category: str):
    for _ in range(50):
        plan = plan_task(rng, category)
        try:
            return write_task(plan, fake_case(plan, rng), rng)
        except Unwritable:
            continue
    raise AssertionError(f'{category}: no task could be written in 50 tries')


# ----- ontology ------------------------------------------------------------------------

def test_ontology_sizes():
    ontology = load_ontology()
    assert len(ontology.targets) >= 150
    assert len(ontology.leaf_classes()) >= 8
    kinds = {t.kind for t in ontology.targets.values()}
    assert {'subcortical', 'cortex', 'lobe', 'group', 'ventricle', 'territory'} <= kinds
    for name in ('whole brain', 'ventricular system', 'left cerebral hemisphere',
                 'bilateral basal ganglia', 'left MCA territory', 'right frontal lobe',
                 'bilateral deep grey matter'):
        assert name in ontology.targets, name


def test_every_target_uses_the_synth_vocabulary():
    from vpcli.synth.vocabulary import load_vocabulary
    vocabulary = load_vocabulary()
    names = {vocabulary.name(i) for i in vocabulary.ids}
    unknown = set()
    for target in load_ontology().targets.values():
        assert target.labels & names, f'{target.name}: no label in the vocabulary'
        unknown |= target.labels - names
    # alternative spellings kept for label maps from other FreeSurfer versions
    assert unknown <= {'Left-Thalamus-Proper', 'Right-Thalamus-Proper', 'Left-Cerebral-Cortex',
                       'Right-Cerebral-Cortex'}, unknown


def test_every_term_names_one_target():
    """A prompt's term must say which target it means: no term (or plural) of one anatomical
    target or lesion class is also a term of another ("insular lobe" once named both the
    insula and the insular lobe, so the right program for it was a coin toss)."""
    import collections
    ontology = load_ontology()
    owners = collections.defaultdict(set)
    for target in ontology.targets.values():
        for term in target.terms + ((target.plural,) if target.plural else ()):
            owners[term.lower()].add(('anatomy', target.key))
    for key, cls in ontology.lesion_classes.items():
        for term in cls.terms + (cls.plural,):
            owners[term.lower()].add(('lesion', key))
    shared = {term: sorted(keys) for term, keys in owners.items() if len(keys) > 1}
    assert not shared, shared


def test_lesion_hierarchy():
    ontology = load_ontology()
    assert ontology.ancestors('glioma') == ['glioma', 'neoplasm', 'mass', 'lesion']
    assert ontology.ancestors('infarct') == ['infarct', 'stroke_lesion', 'lesion']
    assert ontology.covers('mass', 'metastasis') and not ontology.covers('mass', 'infarct')
    from vpcli.synth.lesions import lesion_classes
    assert {ontology.lesion_classes[k].synth for k in ontology.leaf_classes()} == set(lesion_classes())


def test_canonical_names_parse_back():
    ontology = load_ontology()
    for name, target in ontology.targets.items():
        assert parse_target(name) is target
    rng = np.random.default_rng(0)
    for _ in range(200):
        tags = {kind: str(rng.choice(d.values)) for kind, d in ontology.descriptors.items()
                if rng.random() < 0.5}
        class_key = str(rng.choice(list(ontology.lesion_classes)))
        every = bool(rng.random() < 0.2)
        text = lesion_canonical(class_key, tags, every)
        assert parse_target(text) == LesionQuery(class_key, tuple(sorted(tags.items())), every), text
    with pytest.raises(KeyError):
        parse_target('left spleen')


def test_lobes_and_territories_include_white_matter_only_where_documented():
    ontology = load_ontology()
    assert ontology.targets['left frontal lobe'].white_matter
    assert not ontology.targets['left frontal cortex'].white_matter
    assert all(ontology.targets[r].white_matter for r in TERRITORY_REGIONS)
    assert all(r in ontology.targets for r in LOCATION_REGIONS)


# ----- templates -----------------------------------------------------------------------

@pytest.mark.parametrize('category', CATEGORIES)
def test_every_template_expands(category):
    templates = load_templates(category)
    assert 10 <= len(templates.templates) <= 30
    slots = {**shared_slots(), **templates.slots, **{k: (v,) for k, v in BINDINGS.items()}}
    reached = set()
    for template in templates.templates:
        for axis_binding in AXIS_BINDINGS:
            bound = {**slots, **{k: (v,) for k, v in axis_binding.items()}}
            paths = count_expansions(template.text, bound)
            assert paths >= 1
            # walk every slot path when there are few; a bounded prefix otherwise
            for text in list(iter_expansions(template.text, bound))[:5000]:
                assert '{' not in text and '}' not in text, text
                assert text == text.strip() and '  ' not in text, text
            reached |= reachable_alternatives(template.text, bound)
    own = {(name, i) for name, values in templates.slots.items() for i in range(len(values))}
    assert own <= reached, f'{category}: slot alternatives no template reaches: {own - reached}'


def test_grammar_nesting_and_errors():
    slots = {'a': ('x {b}', 'y'), 'b': ('1', '2', '')}
    assert sorted(iter_expansions('{a}!', slots)) == sorted(['x!', 'x 1!', 'x 2!', 'y!'])
    assert count_expansions('{a} {a}', slots) == 16
    with pytest.raises(TemplateError):
        expand('{missing}', slots, np.random.default_rng(0))
    with pytest.raises(TemplateError):
        list(iter_expansions('{loop}', {'loop': ('{loop}',)}))


# ----- ROI descriptions ----------------------------------------------------------------

def test_lesion_descriptions_are_unambiguous():
    rng = np.random.default_rng(1)
    ontology = load_ontology()
    for _ in range(300):
        count = int(rng.integers(1, 5))
        lesions = tuple(
            LesionInfo(i + 1, str(rng.choice(ontology.leaf_classes())),
                       {'side': str(rng.choice(['left', 'right'])),
                        'lobe': str(rng.choice(['frontal', 'parietal'])),
                        'signal': str(rng.choice(['hyperintense', 'hypointense']))},
                       float(rng.uniform(1, 10)))
            for i in range(count))
        target = lesions[int(rng.integers(count))]
        exclude = ('signal',) if rng.random() < 0.5 else ()
        described = lesion_description(rng, target, lesions, exclude)
        if described is None:
            continue
        class_key, tags = described
        assert not set(exclude) & set(tags)
        found = matching_lesions(LesionQuery(class_key, tuple(sorted(tags.items()))), lesions)
        assert [lesion.id for lesion in found] == [target.id]
        if count > 1 and class_key != target.class_key:
            # a parent term is used only when no other lesion falls under it
            assert all(not ontology.covers(class_key, o.class_key) for o in lesions if o is not target)


def test_single_lesion_descriptions_vary_in_specificity():
    rng = np.random.default_rng(2)
    lesion = LesionInfo(1, 'glioma', {'side': 'left', 'lobe': 'frontal', 'signal': 'hyperintense'}, 5.0)
    levels, tag_counts = set(), set()
    for _ in range(300):
        class_key, tags = lesion_description(rng, lesion, (lesion,))
        levels.add(class_key)
        tag_counts.add(len(tags))
    assert levels == {'glioma', 'neoplasm', 'mass', 'lesion'}
    assert tag_counts == {0, 1, 2, 3}


# ----- tasks and programs --------------------------------------------------------------

def _validate(draft) -> None:
    from vpcli.library.registry import registry
    from vpcli.sandbox import split_program, validate_program
    steps = split_program(draft.program, origin='k*')
    validate_program(steps, [s.name for s in draft.scans], registry())


@pytest.mark.parametrize('category', CATEGORIES)
def test_every_category_samples_a_valid_program(category):
    # zlib.crc32, not hash(): str hashes change with each process (PYTHONHASHSEED), which
    # made this test's draws, and whether a rare variant appeared in them, differ run to run.
    rng = np.random.default_rng(zlib.crc32(category.encode()))
    variants = set()
    for _ in range(60):  # the rarest variant, volume_change's rate, is about 1 in 5
        draft = draw(rng, category)
        assert draft.category == category
        assert draft.prompt and '{' not in draft.prompt
        assert draft.program.startswith('# step 1\nenc = encode(')
        assert 'phi' not in draft.program  # φ is the model's to fill in
        assert draft.segments, 'every task segments something'
        for _, target in draft.segments:
            parse_target(target)
        _validate(draft)
        variants.add(draft.variant)
    expected_variants = {'extent': {'axis', 'bbox'}, 'volume_comparison': {'asymmetry', 'pair'},
                         'location': {'lobe', 'territory'}, 'cropping': {'tight', 'margin'},
                         'tissue_removal': {'remove', 'keep', 'skull_strip'}, 'volume_change': {'basic', 'rate'}}
    assert variants == expected_variants.get(category, {'basic'})


def test_characterization_prompts_do_not_give_the_answer_away():
    rng = np.random.default_rng(5)
    asked = {'enhancement': ('enhancing', 'enhancement'), 'diffusion': ('diffusion-restricting',
             'non-restricting'), 'signal_intensity': ('hyperintense', 'hypointense', 'isointense'),
             'location': ('left', 'right', 'frontal', 'parietal', 'MCA', 'ACA', 'PCA')}
    for category, words in asked.items():
        for _ in range(40):
            draft = draw(rng, category)
            targets = ' '.join(target for _, target in draft.segments[:1])
            assert not any(re.search(rf'(^| ){w}( |-|$)', targets) for w in words), targets


def test_variant_prompts_ask_for_what_the_program_computes():
    rng = np.random.default_rng(8)
    words = {('volume_change', 'rate'): ('rate', 'per year', 'yearly', 'how fast', 'annualised'),
             ('extent', 'bbox'): ('bounding box', 'dimensions', 'extents', 'each axis', 'each direction',
                                  'all three axes'),
             ('location', 'territory'): ('territory', 'artery', 'vascular', 'distribution'),
             ('cropping', 'margin'): ('mm', 'millimeters')}
    for (category, variant), expected in words.items():
        seen = 0
        for _ in range(60):
            draft = draw(rng, category)
            if draft.variant == variant:
                seen += 1
                assert any(w in draft.prompt for w in expected), draft.prompt
        assert seen


def test_longitudinal_programs_measure_both_sessions():
    rng = np.random.default_rng(6)
    for category in ('volume_change', 'extent_change', 'intensity_change'):
        draft = draw(rng, category)
        sessions = {s.session for s in draft.scans}
        assert sessions == {0, 1}
        assert '[0]' in draft.program and '[1]' in draft.program


@pytest.mark.parametrize('category', ['intensity', 'intensity_comparison', 'intensity_change',
                                      'signal_intensity'])
def test_a_prompt_names_the_modality_of_the_scan_it_measures_when_the_session_has_several(category):
    from vpcli.tasks.described import draw_described
    from vpcli.tasks.roi import phrasing
    rng = np.random.default_rng(31)
    checked = 0
    for _ in range(60):
        draft, case = draw_described(rng, category)
        first = [s for s in case.scans if s.session == case.scans[0].session]
        if len({s.modality for s in first}) < 2:
            continue
        variable = re.search(r'(?:mean_intensity|signal_ratio)\((\w+)', draft.program).group(1)
        # the measuring step finds the scan by its modality first (``flair = find_scan("FLAIR")``)
        found = re.search(rf'^{variable} = find_scan\("(\w+)"\)$', draft.program, re.M)
        assert found and variable.split("_")[0] == found.group(1).lower(), draft.program
        modality = found.group(1)
        assert modality in {s.modality for s in first}
        words = phrasing()['modality'][modality]
        assert any(re.search(rf'(?<![\w*-]){re.escape(w)}(?![\w*-])', draft.prompt) for w in words), \
            (draft.prompt, modality)
        checked += 1
    assert checked >= 10


def test_every_target_a_program_segments_is_in_the_decoding_vocabulary():
    """The agent may write only these names (constrained decoding); k* uses no other."""
    from vpcli.tasks.described import draw_described
    from vpcli.tasks.ontology import is_target_name
    rng = np.random.default_rng(3)
    seen = set()
    for index in range(17 * 40):
        draft, _ = draw_described(rng, CATEGORIES[index % len(CATEGORIES)])
        seen.update(name for _, name in re.findall(r"segment\(\w+, (['\"])(.*?)\1", draft.program))
    assert len(seen) > 300
    assert [name for name in seen if not is_target_name(name)] == []
    assert all(is_target_name(name[:k], complete=False) for name in seen for k in range(len(name)))


def test_same_seed_same_tasks():
    def run(seed):
        rng = np.random.default_rng(seed)
        return [(d.prompt, d.program) for d in (draw(rng, c) for c in CATEGORIES)]
    assert run(11) == run(11)
    assert run(11) != run(12)


@pytest.mark.slow
def test_prompt_diversity_in_100k_samples():
    rng = np.random.default_rng(2024)
    prompts = set()
    total = 100_000
    for index in range(total):
        prompts.add(draw(rng, CATEGORIES[index % len(CATEGORIES)]).prompt)
    print(f'\ndistinct prompts in {total} samples: {len(prompts)}')
    assert len(prompts) > 0.9 * total


def test_a_skull_strip_keeps_the_intracranial_volume():
    """"remove the skull" names the tissue to take away, not the ROI to blank: a skull-strip
    task keeps the intracranial volume (it used to be read as remove(img, intracranial volume),
    which blanks the brain)."""
    import numpy as np

    from vpcli.tasks.described import draw_described
    rng = np.random.default_rng(4)
    strips = []
    for paraphrased in (False, True):
        for _ in range(300):
            draft, _ = draw_described(rng, 'tissue_removal', 'train', paraphrased=paraphrased)
            if draft.variant == 'skull_strip':
                strips.append(draft)
    assert len(strips) > 30
    for draft in strips:
        assert 'extract(' in draft.program and '"intracranial volume"' in draft.program, draft.program
        assert 'remove(' not in draft.program
    assert any('skull' in d.prompt.lower() for d in strips)


@pytest.mark.parametrize('bare, plural', [
    ('lateral ventricles', True), ('left and right caudate', True), ('both lateral ventricles', True),
    ('basal ganglia', True), ('lesions in the left frontal lobe', True), ('white matter hyperintensities', True),
    ('hippocampus on both sides', False), ('thalamus (both sides)', False), ('pons', False),
    ('nucleus accumbens', False), ('choroid plexus', False), ('largest left frontal infarct', False),
    ('left lateral ventricle', False), ('corpus callosum', False)])
def test_roi_phrases_know_their_number(bare, plural):
    """``{roi_is}`` agrees with the ROI: "how big are the lateral ventricles?" is how people
    ask, and a model that only ever read "how big is" took it for a two-sided question."""
    from vpcli.tasks.roi import is_plural
    assert is_plural(bare) is plural
