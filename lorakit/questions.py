"""The course's 'check your understanding' questions, by chapter, and `ask` to put one in a notebook.

Keys are "<notebook>.<letter>" (the letter names a question, not its place in the notebook). Each
question sits in its notebook just before the cell or section that answers it: answer first, then
read on. The feedback of every
option says why it is right or what it misses, so a wrong pick teaches too. Numbers to predict come
with the typical wrong answers and what produces them.
"""

from __future__ import annotations

from lorakit.quiz import Choice, Number, Question, Quiz

QUESTIONS: dict[str, Question] = {
    # 01 · the tiny Stable Diffusion
    "01.a": Choice(
        "During training, what does the UNet learn to predict from a noised latent, the timestep and the prompt?",
        {
            "the noise that was added to the latent": "Right: the noise-prediction (ε) objective of DDPM, which SD 1.5 "
            "uses. The loss is the mean squared error between the predicted and the added noise.",
            "the clean latent": "Some models predict x₀ (or v, a mix of both), but SD 1.5 and this tiny model predict "
            "the noise ε; the sampler turns that into a step towards the clean latent.",
            "the latent one sampler step later": "That is what a sampler computes from the prediction, not what the "
            "UNet is trained on: the same UNet serves DDIM, DPM-Solver and others because it predicts ε.",
            "the prompt's text embedding": "The text embedding is an input (through cross-attention), not an output.",
        },
        "the noise that was added to the latent",
    ),
    "01.b": Number(
        "A 10-step sample with classifier-free guidance at scale 7.5: how many noise predictions does the UNet "
        "make per image?",
        20, "two per step, one with the prompt and one with the empty prompt (diffusers runs them as one batch of "
        "2); with guidance scale 1 or less diffusers skips the empty prompt, and a step costs half.",
        tolerance=0.0, hints={"you counted one prediction per step": 10},
    ),
    # 02 · LoRA from scratch
    "02.a": Number(
        "SD 1.5's first attention projections are 320 × 320. How many trainable numbers does a rank-4 LoRA "
        "add to one of them?",
        2560, "B is 320 × 4 and A is 4 × 320: r · (out + in) = 4 · 640, against 102,400 in the weight itself.",
        tolerance=0.0, hints={"you multiplied all three sizes, r · out · in": 409600,
                              "you counted one factor only": 1280, "you counted the full weight": 102400},
    ),
    "02.b": Choice(
        "Which initialisation of a LoRA layer would never learn anything?",
        {
            "A random, B zero (peft's default)": "This one learns: B A = 0, so the fresh layer changes nothing, and "
            "B's gradient (the output's gradient times A x) is not zero.",
            "A zero, B random": "This one learns too: B A = 0 at the start, and A's gradient (Bᵀ times the output's "
            "gradient, times x) is not zero.",
            "A zero and B zero": "Right: every gradient of A goes through B and every gradient of B through A, so "
            "both stay zero forever.",
            "A random and B random": "This one learns, but the fresh adapter already changes the model's output: "
            "training starts from a damaged model.",
        },
        "A zero and B zero",
    ),
    "02.c": Choice(
        "An adapter has alpha = 8. You raise its rank from 4 to 8 and keep alpha. What happens to the scale "
        "applied to B A?",
        {
            "it halves, from 2 to 1": "Right: the scale is alpha / rank. That keeps the update's size from growing "
            "with the rank; rsLoRA divides by √rank instead (8/√8 ≈ 2.8).",
            "it stays 2": "The scale is alpha / rank, and the rank is in it: 8 / 8 = 1.",
            "it doubles, from 2 to 4": "More rank means more directions, not a larger scale: alpha / rank = 1.",
        },
        "it halves, from 2 to 1",
    ),
    # 03 · LoRA against full fine-tuning
    "03.a": Number(
        "SD 1.5's UNet has about 860 million float32 weights. How many GiB of state does AdamW keep to fine-tune "
        "all of them (not counting the weights and their gradients)?",
        6.4, "two moments per weight, 8 bytes: 860e6 × 8 = 6.9e9 bytes = 6.4 GiB. A rank-4 attention LoRA's "
        "state is a few MiB.",
        tolerance=0.05, unit=" GiB", hints={"you counted one moment only": 3.2,
                                           "you counted in GB (10⁹ bytes), not GiB (2³⁰)": 6.88},
    ),
    "03.b": Choice(
        "Why is no rank-4 matrix closer to ΔW (in the Frobenius norm) than its truncated SVD?",
        {
            "the Eckart–Young theorem: keeping the 4 largest singular values is optimal": "Right: the error is the "
            "root of the sum of the dropped σ², and no rank-4 matrix drops less.",
            "because the SVD of ΔW is exact": "The full SVD is exact; the truncated one drops every σ after the 4th. "
            "The question is why that loss is the smallest possible.",
            "keeping ΔW's 4 · (out + in) largest entries would be just as close": "Keeping entries gives a "
            "sparse matrix, which is generally of full rank; a rank-4 matrix is usually dense (notebook 02, C4). "
            "Rank and sparsity are different things.",
        },
        "the Eckart–Young theorem: keeping the 4 largest singular values is optimal",
    ),
    # 03b · what LoRA costs, and its rank
    "03b.a": Choice(
        "On a CPU, a LoRA training step skips the weight gradients and the optimizer update of every frozen "
        "weight. What speed-up would you expect over full fine-tuning on this small model?",
        {
            "a modest one at most: the backward pass still runs through every layer": "Right: to reach the "
            "adapters, gradients flow back through every activation of the UNet; only the weight gradients of "
            "frozen layers and AdamW's update are saved. Section 2 times it.",
            "about 60× faster, as the file is 60× smaller": "Storage scales with the trainable numbers; compute does "
            "not, because the forward and the activations' backward are the same for both.",
            "slower: LoRA adds layers": "The extra matmuls are tiny (rank 4); they do not outweigh the saved weight "
            "gradients.",
        },
        "a modest one at most: the backward pass still runs through every layer",
    ),
    "03b.b": Number(
        "A rank-4 LoRA of this tiny model holds 37,248 float32 numbers. How many KiB do its tensors take in a "
        "safetensors file?",
        145.5, "37,248 × 4 bytes = 148,992 bytes = 145.5 KiB. The file adds a JSON header of key names, shapes "
        "and offsets: about 16 KiB for this adapter's 128 tensors, which is why section 2 shows 162 KiB.",
        tolerance=0.01, unit=" KiB",
        hints={"you used 2 bytes per number (float16 files are half the size)": 72.75,
               "you counted in kB (1000 bytes)": 149.0},
    ),
    # 04 · mode collapse
    "04.a": Choice(
        "What does the Vendi score count?",
        {
            "the effective number of distinct samples": "Right: exp of the entropy of the eigenvalues of the "
            "samples' similarity matrix (divided by n). n identical samples score 1, n unrelated ones n.",
            "the mean distance between pairs of samples": "That is another diversity measure: it scores two tight, "
            "far-apart clusters high. Vendi counts them as about 2.",
            "how close samples are to the training images": "That is memorisation (the nearest-training-image "
            "distance, measured beside it); a model can copy one image many times (Vendi ≈ 1) or many images.",
        },
        "the effective number of distinct samples",
    ),
    "04.b": Choice(
        "DreamBooth's prior-preservation loss adds a second denoising loss. On what?",
        {
            "images of the class ('a triangle') drawn by the base model before training": "Right: they hold the "
            "model to what it drew for the class prompt, so the class does not drift to the instance.",
            "the instance images again, with the class prompt": "That would teach the class prompt to draw the "
            "instance: the drift prior preservation is meant to stop.",
            "the adapter's weights (an L2 penalty)": "A weight penalty is a different remedy; prior preservation is a "
            "loss on data, weighted by λ.",
        },
        "images of the class ('a triangle') drawn by the base model before training",
    ),
    # 04b · remedies for collapse
    "04b.a": Choice(
        "Before you run the table: which face of collapse does random augmentation of the instance images "
        "(shifts, scales, flips) target?",
        {
            "diversity: where and how large the object is drawn": "Right: augmentation shows the model the instance "
            "in many positions and sizes. Whether it also helps editability or drift is what the table measures.",
            "drift: what the class prompt draws": "Drift is about the class prompt, which augmentation of instance "
            "images does not touch; prior preservation targets it.",
            "fidelity: whether the instance is recognised": "Fidelity is what training already maximises; "
            "augmentation, if anything, makes it harder.",
        },
        "diversity: where and how large the object is drawn",
    ),
    "04b.b": Choice(
        "Early stopping keeps the checkpoint before collapse. What should choose it?",
        {
            "a validation signal measured on samples (e.g. diversity or editability) along training": "Right: the "
            "training loss keeps falling through collapse, so it cannot tell you when to stop.",
            "the lowest training loss": "The training loss falls while the model memorises the instance images; "
            "its minimum is collapse itself.",
            "a fixed step count from a tutorial": "The step where collapse sets in depends on the learning rate, "
            "the rank, the data and the seed; measure it.",
        },
        "a validation signal measured on samples (e.g. diversity or editability) along training",
    ),
    # 05 · interpolation and merging
    "05.a": Choice(
        "Two adapters a and b on one layer. Mixing them half-and-half by averaging their factors, "
        "B = ½(B_a + B_b) and A = ½(A_a + A_b), gives B A = ?",
        {
            "¼(B_a A_a + B_b A_b) + ¼(B_a A_b + B_b A_a)": "Right: half of the exact midpoint's terms, plus cross "
            "terms that neither adapter learnt. Section 2 measures how far that lands from the midpoint.",
            "½(B_a A_a + B_b A_b), the midpoint": "That is weight-space mixing (what set_adapters computes); averaging "
            "the factors multiplies out differently.",
            "¼(B_a A_a + B_b A_b)": "Multiply it out: (B_a + B_b)(A_a + A_b) also has B_a A_b and B_b A_a.",
        },
        "¼(B_a A_a + B_b A_b) + ¼(B_a A_b + B_b A_a)",
    ),
    "05.b": Choice(
        "You set a blend with pipe.set_adapters(['orange', 'striped'], [0.3, 0.7]), then call "
        "pipe(prompt, cross_attention_kwargs={'scale': 0}) once. Which weights do the adapters have afterwards?",
        {
            "1 and 1: the blend is lost": "Right, in the diffusers this kit runs: after the call it 'undoes' the "
            "scale, and undoing 0 resets every adapter to weight 1. Section 5 shows it.",
            "0.3 and 0.7, as before": "That is what you would expect, and what happens for any scale but 0. "
            "Section 5 shows the case of 0.",
            "0 and 0": "The scale applies during the call only; afterwards diffusers resets the weights.",
        },
        "1 and 1: the blend is lost",
    ),
    # 06 · LoRA files
    "06.a": Number(
        "A kohya file has lora_down.weight of shape (4, 320), lora_up.weight (320, 4) and alpha = 1 for a layer. "
        "What scale multiplies B A?",
        0.25, "alpha / rank, with the rank read from lora_down's first dimension: 1 / 4.", tolerance=0.0,
        hints={"you used alpha alone": 1.0, "you divided rank by alpha": 4.0},
    ),
    "06.b": Choice(
        "A LoRA file carries no alpha at all. What scale does a loader apply?",
        {
            "1: alpha is taken to equal the rank": "Right, and nothing warns. If training used another alpha (here "
            "8 with rank 4, scale 2), the adapter loads at the wrong strength: section 3's trap.",
            "0: without alpha the adapter is off": "Loaders assume alpha = rank, so the adapter runs at scale 1.",
            "the loader refuses the file": "diffusers and kohya's scripts load it without a word; `inspect_lora` is "
            "what tells you 'missing: alpha = rank assumed'.",
        },
        "1: alpha is taken to equal the rank",
    ),
    # 07 · control: sliders
    "07.a": Choice(
        "The size slider was trained at scales +1 and −1 only. What should scale +0.5 do?",
        {
            "make objects somewhat larger than the prompt alone would": "Right, if the slider learnt a direction: "
            "its effect is (nearly) linear in the scale, since the target is ε(c) + s·(ε(c+) − ε(c−)). Section 1 "
            "draws every scale from −2 to 2.",
            "nothing: it never saw 0.5": "The adapter's output is multiplied by the scale, so 0.5 is half the "
            "learnt change; nothing about it is special.",
            "make them large, as +1 does": "The scale multiplies the adapter's change, so 0.5 gives half of it.",
        },
        "make objects somewhat larger than the prompt alone would",
    ),
    "07.b": Choice(
        "ESD's target for a prompt naming the concept is ε(anchor) − η·(ε(concept) − ε(anchor)). What is it, read "
        "as guidance?",
        {
            "classifier-free guidance turned around: away from the concept": "Right: CFG moves along "
            "ε(prompt) − ε(∅) towards the prompt; ESD trains the model to move along it the other way.",
            "guidance towards the concept": "The minus sign points away from the concept's direction.",
            "the anchor's prediction, unchanged": "That is the target with η = 0: the model would draw the anchor, "
            "not erase anything beyond it.",
        },
        "classifier-free guidance turned around: away from the concept",
    ),
    # 07b · erasing a colour
    "07b.a": Choice(
        "An eraser's success is measured as the share of images for 'red' prompts that are not drawn red. Why "
        "can that flatter it?",
        {
            "an empty or broken image is not red either": "Right: a model that draws nothing 'erases' perfectly. "
            "That is why 07b also gives the erasure rate on images with one recognisable object, and measures the "
            "damage on every other prompt.",
            "red is easy to recognise": "An easy colour makes the measure reliable, not flattering; the judge audit "
            "checks it on these images.",
            "the prompts are too short": "The prompts' length does not matter here; what counts as 'not red' does.",
        },
        "an empty or broken image is not red either",
    ),
}


def ask(key: str) -> Quiz:
    """The form for one question, e.g. ask("03.a"); put it last in a cell to show it."""
    if key not in QUESTIONS:
        chapter = key.split(".")[0]
        known = [k for k in QUESTIONS if k.split(".")[0] == chapter] or list(QUESTIONS)
        raise KeyError(f"no question {key!r}; there are {known}")
    return Quiz(key, QUESTIONS[key])
