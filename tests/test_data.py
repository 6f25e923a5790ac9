import numpy as np
import pytest
import torch
from PIL import Image

from lorakit.data import (
    ATTRIBUTES,
    HELD_OUT_WORDS,
    RARE_TOKENS,
    BACKGROUND,
    as_uint8,
    augmented,
    caption_for,
    concat_datasets,
    few_shot_instance,
    make_dataset,
    no_object_images,
    oversized_images,
    parse_prompt,
    pretraining_prompts,
    unknown_words,
    warped_images,
)


def test_same_seed_gives_identical_bytes():
    a, b = make_dataset(50, seed=3), make_dataset(50, seed=3)
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert a.captions == b.captions and a.attributes == b.attributes
    assert not torch.equal(a.images, make_dataset(50, seed=4).images)


@pytest.mark.parametrize("make", [no_object_images, oversized_images, warped_images])
def test_judge_training_images_are_uint8_and_seeded(make):
    a = make(8, seed=5)
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, make(8, seed=5)) and not torch.equal(a, make(8, seed=6))


def test_every_warped_image_draws_an_object_and_some_are_faded():
    images = warped_images(24, seed=1).float()
    away = (images - torch.tensor(BACKGROUND, dtype=torch.float32)[:, None, None]).abs().amax(1)  # (n, H, W)
    strongest = away.amax((1, 2))  # the most any pixel differs from the background, per image
    assert (strongest > 40).all()
    assert (strongest < 150).any() and (strongest > 150).any()  # faded ones, and full colour ones


def test_shapes_dtypes_and_range():
    data = make_dataset(8, seed=0)
    assert data.images.shape == (8, 3, 32, 32) and data.images.dtype == torch.uint8
    x, caption = data[0]
    assert x.shape == (3, 32, 32) and -1.0 <= x.min() and x.max() <= 1.0
    assert isinstance(caption, str) and caption.startswith("a ")


def test_default_covers_every_pretraining_value_and_no_held_out_one():
    data = make_dataset(600, seed=1)
    for group, values in ATTRIBUTES.items():
        seen = {getattr(a, group) for a in data.attributes}
        assert seen == {v for v in values if v not in HELD_OUT_WORDS}, group
    words = {w for c in data.captions for w in c.split()}
    assert not words & set(HELD_OUT_WORDS)


def test_captions_name_the_drawn_attributes():
    data = make_dataset(200, seed=2)
    for caption, attrs in zip(data.captions, data.attributes):
        named = parse_prompt(caption)
        assert named["colour"] == attrs.colour and named["shape"] == attrs.shape
        assert named.get("size", attrs.size) == attrs.size
    with_size = sum("small" in c or "large" in c for c in data.captions) / len(data)
    assert 0.6 < with_size < 0.9  # the size word is sometimes left out


def test_include_and_exclude():
    data = make_dataset(100, seed=0, include=["orange", "star"], exclude=["small"])
    assert {a.colour for a in data.attributes} == {"orange"}
    assert {a.shape for a in data.attributes} == {"star"}
    assert {a.size for a in data.attributes} == {"large"}
    striped = make_dataset(20, seed=0, include=["striped"])
    assert all("striped" in c for c in striped.captions)


def test_images_show_the_colour_they_claim():
    data = make_dataset(60, seed=5)
    bg = data.images[:, :, 0, 0].float()  # corners are background
    for img, attrs in zip(data.images, data.attributes):
        pixels = img.flatten(1).T.float()  # (H*W, 3)
        mask = (pixels - pixels[0]).abs().sum(1) > 60
        assert mask.sum() > 10, "the object covers some pixels"
        mean = pixels[mask].mean(0)
        if attrs.colour == "red":
            assert mean[0] > mean[1] + 60 and mean[0] > mean[2] + 60
    assert torch.allclose(bg, bg[0].expand_as(bg), atol=0)


@pytest.mark.parametrize("bad", [["pink"], ["circle", "hexagon"]])
def test_unknown_words_raise_with_the_valid_list(bad):
    with pytest.raises(ValueError, match="unknown attribute word") as err:
        make_dataset(4, include=bad)
    assert "red" in str(err.value) and "circle" in str(err.value)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_bad_n_raises(n):
    with pytest.raises(ValueError, match="positive integer"):
        make_dataset(n)


def test_excluding_everything_in_a_group_raises():
    with pytest.raises(ValueError, match="leave no size"):
        make_dataset(4, exclude=["small", "large"])


def test_few_shot_instance_is_one_object():
    data = few_shot_instance(5, token="sks", colour="purple", shape="triangle", size="small", position=(10, 11))
    assert len(data) == 5 and set(data.captions) == {"a sks triangle"}
    xs = [a.x for a in data.attributes]
    assert max(xs) - min(xs) <= 2.0 and {a.colour for a in data.attributes} == {"purple"}
    assert len({img.numpy().tobytes() for img in data.images}) == 5  # jittered, not copies
    with pytest.raises(ValueError, match="rare tokens"):
        few_shot_instance(3, token="dog")
    assert "sks" in RARE_TOKENS


def test_prompts_and_word_helpers():
    prompts = pretraining_prompts()
    assert len(prompts) == 2 * 5 * 3 and "a large red circle" in prompts
    assert unknown_words("a large red dog") == ["dog"]
    assert parse_prompt("a small orange striped star") == {"size": "small", "colour": "orange", "style": "striped", "shape": "star"}
    from lorakit.data import Attributes

    assert caption_for(Attributes("red", "circle", "large", "striped")) == "a large red striped circle"


def test_as_uint8_reads_every_format():
    data = make_dataset(3, seed=0)
    ref = data.images
    as_np = ref.permute(0, 2, 3, 1).numpy()
    assert torch.equal(as_uint8(as_np), ref)
    assert torch.equal(as_uint8(as_np.astype(np.float32) / 255), ref)
    assert torch.equal(as_uint8(ref.float() / 255), ref)
    assert torch.equal(as_uint8([Image.fromarray(a) for a in as_np]), ref)
    assert torch.equal(as_uint8(data), ref)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        as_uint8(torch.zeros(3, 32, 32))


def test_concat_datasets_keeps_order():
    a, b = make_dataset(3, seed=0, include=["orange"]), make_dataset(2, seed=1)
    both = concat_datasets(a, b)
    assert len(both) == 5 and both.captions == a.captions + b.captions
    assert torch.equal(both.images[3:], b.images)
    with pytest.raises(ValueError, match="at least one"):
        concat_datasets()


def test_augmented_views_move_the_object_and_keep_it_whole():
    data = few_shot_instance(2, position=(16.0, 16.0))
    views = augmented(data, max_shift=4, shift_step=4, flip=True)
    assert len(views) == 2 * 2 * 9  # 2 images x 2 flips x 3 x 3 shifts, none cut at the centre
    assert set(views.captions) == {"a sks triangle"}
    bg = torch.tensor(BACKGROUND, dtype=torch.uint8)[:, None, None]
    object_pixels = lambda img: int((img != bg).any(0).sum())  # noqa: E731
    assert {object_pixels(v) for v in views.images[:18]} == {object_pixels(data.images[0])}  # shifted, never cut
    first = data.attributes[0]
    moved = {(round(a.x - first.x, 3), round(a.y - first.y, 3)) for a in views.attributes[:9]}
    assert moved == {(dx, dy) for dx in (-4, 0, 4) for dy in (-4, 0, 4)}
    assert views.attributes[9].x == pytest.approx(32 - first.x - 4)  # flipped, then shifted left
    assert torch.equal(views.images[13], data.images[0].flip(-1))  # flipped, no shift
    # a shift pushing the object past the border is skipped, not drawn cut
    assert len(augmented(few_shot_instance(1, position=(9.0, 16.0)), max_shift=4, shift_step=4, flip=False)) == 6
    with pytest.raises(ValueError, match="shift_step"):
        augmented(data, shift_step=0)


def test_a_huge_dataset_states_the_limit_and_the_memory_it_would_need():
    with pytest.raises(ValueError, match=r"10,000,000 images would need 30.7 GB.*limit is 200,000"):
        make_dataset(10**7)


@pytest.mark.parametrize("kwargs", [{"include": "red"}, {"exclude": "small"}])
def test_a_string_where_a_list_is_expected_is_explained(kwargs):
    with pytest.raises(TypeError, match=r"must be a list of words, e.g. \w+=\['"):
        make_dataset(4, **kwargs)


@pytest.mark.parametrize("position", [(100, 100), (2, 16), (16, 31), (-5, 10)])
def test_few_shot_objects_must_lie_inside_the_image(position):
    with pytest.raises(ValueError, match="outside the 32x32 image"):
        few_shot_instance(3, position=position)


def test_model_range_images_are_refused_with_the_conversion():
    from lorakit.plotting import show_grid

    images = torch.rand(4, 3, 32, 32) * 2 - 1  # [-1, 1], as a VAE decodes
    with pytest.raises(ValueError, match="to_uint8"):
        show_grid(images)
    with pytest.raises(ValueError, match="NaN"):
        as_uint8(torch.full((1, 3, 4, 4), float("nan")))
    assert as_uint8(torch.zeros(1, 3, 4, 4)).dtype == torch.uint8


def test_more_bad_inputs_get_their_fix():
    from lorakit.plotting import show_grid

    with pytest.raises(ValueError, match="seed must be"):
        make_dataset(4, seed=-1)
    with pytest.raises(ValueError, match="empty"):
        show_grid(torch.zeros(0, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="suptitle"):
        show_grid(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), titles="ab")
    with pytest.raises(ValueError, match="uint8"):
        as_uint8(torch.randint(0, 2, (2, 3, 8, 8)))
