"""Rows joined from the chat template's skeleton are the rows the template renders, token for
token; a template whose output depends on its contents is rendered each time (no Django)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from workers.media import VideoFrames
from workers.reward_model import (
    QWEN2_VL_CHAT_TEMPLATE,
    CandidateInput,
    ScoringItem,
    load_reward_model,
)
from workers.reward_model.chat_skeleton import PROBES, ChatSkeleton, derive_skeleton
from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "molmo2")
TEXT = "{{ x }} and {% y %}"  # a prompt that a careless join would read as Jinja
ANSWERS = [
    "A short answer.",
    "  Leading and trailing spaces.  ",
    "Two lines\nand a blank one\n\n",
    "A typed <|resp_sep|> and <|im_end|> (defused), braces {} and {{ }}.",
    "café, 東京, 🙂",
    "\n",
    "The end.",
    "x",
]


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django fixture: this file runs without Django."""


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (56, 84, 3), dtype=np.uint8))


def _clip(seed: int) -> VideoFrames:
    rng = np.random.default_rng(seed)
    indices = [0, 12, 24, 36]
    return VideoFrames(
        frames=rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8),
        indices=indices,
        timestamps=[i / 10 for i in indices],
        fps=1.0,
        source_fps=10.0,
    )


def _items(molmo2: bool = False) -> list[ScoringItem]:
    """Text, image and video prompts and answers, N = 1, 2, 4 and 8."""
    texts = [CandidateInput(text=text) for text in ANSWERS]
    pictures = [CandidateInput(kind="image", media=_picture(i), text=t) for i, t in enumerate("ab")]
    items = [
        ScoringItem(prompt_text="Which answer is best?", candidates=texts[:1]),
        ScoringItem(prompt_text=" " + TEXT + "\n", candidates=texts[:2]),
        ScoringItem(prompt_text="", candidates=texts[2:6]),
        ScoringItem(prompt_text="Eight answers.\n\n", candidates=texts),
        ScoringItem(prompt_text="What is shown?", candidates=texts[:4], prompt_image=_picture(7)),
        ScoringItem(prompt_text="A picture of a square.", candidates=pictures),
        ScoringItem(prompt_text="What moves?", candidates=texts[3:7], prompt_video=_clip(1)),
        ScoringItem(
            prompt_text="A clip of a circle.",
            candidates=[CandidateInput(kind="video", media=_clip(2))],
        ),
    ]
    if not molmo2:  # Molmo2 takes no images beside a video
        items.append(
            ScoringItem(
                prompt_text="Both?",
                candidates=[*pictures, CandidateInput(kind="video", media=_clip(3)), *texts[:1]],
                prompt_image=_picture(8),
                prompt_video=_clip(4),
            )
        )
    return items


def _plans(builder, items, mode="packed"):
    out = []
    for index, item in enumerate(items):
        encoded = builder.encode_item(item)
        plan = builder.plan(index, encoded, mode)
        rows = [(row.ids, row.segments, row.slots) for row in plan.rows]
        out.append((rows, plan.layout, plan.error, plan.candidate_errors))
    return out


def _rendered(builder, items):
    out = []
    for item in items:
        encoded = builder.encode_item(item)
        if encoded.error is None:
            bodies = [c.body for c in encoded.candidates if c is not None]
            out.append((builder.render(encoded, None), builder.render(encoded, bodies)))
    return out


def _both(builder, run):
    """`run(builder)` with skeletons, then with every row rendered by the template."""
    with_skeleton = run(builder)
    builder.chat_skeletons = False
    builder._skeletons.clear()
    try:
        rendered = run(builder)
    finally:
        del builder.chat_skeletons
        builder._skeletons.clear()
    return with_skeleton, rendered


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module", params=FAMILIES)
def builder(request, tokenizer):
    return build_tiny_reward_scorer(family=request.param, tokenizer=tokenizer).builder


@pytest.mark.parametrize("mode", ["packed", "isolated", "separate"])
def test_skeleton_rows_are_the_templates_rows_token_for_token(builder, mode):
    items = _items(molmo2=builder.molmo2 is not None)
    with_skeleton, rendered = _both(builder, lambda b: _plans(b, items, mode))

    assert with_skeleton == rendered
    assert sum(len(rows) for rows, *_ in rendered) >= len(items)


def test_the_skeleton_is_used_for_every_row_shape(builder):
    items = _items(molmo2=builder.molmo2 is not None)
    with_skeleton, rendered = _both(builder, lambda b: _rendered(b, items))
    _rendered(builder, items)
    shapes = {(kinds, generation) for _, kinds, generation in builder._skeletons}

    assert with_skeleton == rendered
    assert len(rendered) >= 8
    # Text, image, video and image + video prompts (Molmo2: no image beside a video).
    assert len(shapes) == (6 if builder.molmo2 is not None else 8)
    assert all(isinstance(s, ChatSkeleton) for s in builder._skeletons.values())


def test_the_demo_checkpoints_template_gives_the_same_rows(tmp_path):
    """The demo model's tokenizer (trained on its corpus) saved and loaded as `make demo` does."""
    corpus = [*ANSWERS, "Which answer is best?", "What is shown?"]
    build_tiny_reward_scorer(tokenizer=build_tiny_tokenizer(corpus, vocab_size=512)).save(
        tmp_path / "model"
    )
    builder = load_reward_model(tmp_path / "model", device="cpu").builder
    items = _items()
    with_skeleton, rendered = _both(builder, lambda b: _plans(b, items))

    assert with_skeleton == rendered
    _plans(builder, items)
    assert builder._skeletons and all(s is not None for s in builder._skeletons.values())


CONTENT = "{{ content['text'] }}"
DEPENDENT = {
    "trim": CONTENT.replace("}}", "| trim }}"),
    "if x in content": "{% if 'x' in content['text'] %}[x]{% endif %}" + CONTENT,
    "if content": "{% if content['text'] %}" + CONTENT + "{% else %}(empty){% endif %}",
    "braces unescaped": "{{ content['text'] | replace('{', '(') }}",
    "separator counted": CONTENT + "{{ content['text'].count('<|resp_sep|>') }}",
    "clock": CONTENT + "{{ strftime_now('%H') if strftime_now is defined else '' }}",
}


@pytest.mark.parametrize("name", DEPENDENT)
def test_a_content_dependent_template_is_rendered_each_time(name, tokenizer):
    assert QWEN2_VL_CHAT_TEMPLATE.count(CONTENT) == 1
    template = QWEN2_VL_CHAT_TEMPLATE.replace(CONTENT, DEPENDENT[name])
    builder = build_tiny_reward_scorer(tokenizer=tokenizer).builder
    builder.chat_template = template
    items = _items()
    with_skeleton, rendered = _both(builder, lambda b: _rendered(b, items))

    assert with_skeleton == rendered
    assert builder.tokenizer.chat_template != template  # the builder's own, not the tokenizer's
    _rendered(builder, items)
    assert builder._skeletons and all(s is None for s in builder._skeletons.values())


def test_a_changed_template_gets_its_own_skeletons(tokenizer):
    builder = build_tiny_reward_scorer(tokenizer=tokenizer).builder
    item = builder.encode_item(_items()[0])
    before = builder.render(item, ["One."])
    builder.chat_template = QWEN2_VL_CHAT_TEMPLATE.replace("You are a helpful", "You are a")

    assert builder.render(item, ["One."]) == before.replace("You are a helpful", "You are a")


def test_derive_skeleton_joins_what_the_render_writes():
    def render(contents):
        prompt, *answer = contents
        return f"<s>{prompt}|{prompt}" + (f"<a>{answer[0]}</a>" if answer else "<gen>")

    two, one = derive_skeleton(render, 2), derive_skeleton(render, 1)

    assert two.pieces == ("<s>", "|", "<a>", "</a>") and two.slots == (0, 0, 1)
    assert one.pieces == ("<s>", "|", "<gen>") and one.slots == (0, 0)
    for prompt, answer in PROBES:
        assert two.fill((prompt, answer)) == render((prompt, answer))


@pytest.mark.parametrize(
    "render",
    [
        lambda c: "<s>" + c[0][:-1],  # a content cut
        lambda c: "<s>" + c[0].strip(),
        lambda c: "<s>" + ("long" if len(c[0]) > 40 else "") + c[0],
        lambda c: "<s>" + c[0].replace("\n", "\\n"),
        lambda c: "<s>" + c[0] if c[0] else 1 / 0,  # refuses an empty content
    ],
)
def test_derive_skeleton_refuses_a_content_dependent_render(render):
    assert derive_skeleton(render, 1) is None


def test_a_builder_pickled_keeps_rendering_the_same(builder):
    import pickle

    items = _items(molmo2=builder.molmo2 is not None)
    before = _rendered(builder, items)
    copy = pickle.loads(pickle.dumps(builder))

    assert _rendered(copy, items) == before
    assert copy._skeletons.keys() == builder._skeletons.keys()
